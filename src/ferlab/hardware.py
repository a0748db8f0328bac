"""What measured a number: the CPU (model and the instruction-set features that change speed and int8/bf16
behaviour) and the library versions.  Every benchmark JSON, metrics.json and model card records this.

Ground floor: stdlib only (library versions are read from package metadata, nothing heavy is imported).
"""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata

# the flags that change what ferlab's numbers are: SIMD width, int8 dot products (VNNI), native bf16, AMX
FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
LIBRARIES = ("numpy", "onnxruntime", "opencv-python-headless", "torch")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = frozenset(value.split())
                if flags and key == "model name":
                    break
    except OSError:
        pass
    return model, flags


# what ``benchmarks/masked_cpu.py`` hides from CPUID (it sets FERLAB_CPU_MASK in the processes it runs); the
# kernels the libraries choose, and so this record, follow CPUID, not /proc/cpuinfo
MASKS = {"avx2": frozenset({"avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"})}


def cpu_mask() -> str | None:
    """The feature mask this process runs under (``FERLAB_CPU_MASK``), or None."""
    mask = os.environ.get("FERLAB_CPU_MASK")
    return mask if mask in MASKS else None


def cpu_features() -> dict[str, bool]:
    """{feature: present} for :data:`FEATURES` (all False where /proc/cpuinfo cannot be read), as the process
    sees them: less what a CPU mask hides."""
    flags = _cpuinfo()[1] - MASKS.get(cpu_mask() or "", frozenset())
    return {f: f in flags for f in FEATURES}


def has_vnni() -> bool:
    f = cpu_features()
    return f["avx512_vnni"] or f["avx_vnni"]


def has_native_bf16() -> bool:
    """AVX512_BF16 or AMX: where torch's bf16 autocast is fast on a CPU (elsewhere it is ~10x slower)."""
    f = cpu_features()
    return f["avx512_bf16"] or f["amx_bf16"]


def library_versions(names=LIBRARIES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine_info(threads: int | None = None, libraries=LIBRARIES) -> dict:
    """The record that goes beside every measured number (``libraries``: extra package names to add)."""
    model, _ = _cpuinfo()
    names = tuple(dict.fromkeys((*LIBRARIES, *libraries)))
    info = {"cpu": model, "cpus": os.cpu_count(), "features": cpu_features(),
            "python": platform.python_version(), "libraries": library_versions(names),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}
    if cpu_mask():
        info["cpu_mask"] = (f"{cpu_mask()}: {', '.join(sorted(MASKS[cpu_mask()]))} hidden from CPUID by "
                            "benchmarks/masked_cpu.py (this core, an AVX2-only CPU's kernels)")
    if threads is not None:
        info["threads"] = threads
    return info
