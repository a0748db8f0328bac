"""Run a command as on an AVX2-only CPU, at native speed: AVX-512, VNNI, BF16 and AMX hidden from CPUID.

``benchmarks/masked_cpu.c`` is compiled (gcc, once, cached by its digest) and preloaded; it makes CPUID fault
(Linux ``arch_prctl(ARCH_SET_CPUID)``, the ``cpuid_fault`` flag) and answers with those bits cleared, so ONNX
Runtime, numpy and the TFLite runtime of ``fer`` choose the kernels of an AVX2 machine (Zen 3, Haswell to
Coffee Lake) and run them on this core.  Unlike ``benchmarks/emulated_cpu.py`` (qemu, every instruction
translated) the timings mean something: they are the AVX2 kernels' speed on this core's width, caches and
clock, not a real AVX2 machine's (on Zen 4, an AVX-512 instruction is split into two 256-bit halves anyway,
so what changes most is what VNNI does: one int8 dot-product instruction where AVX2 needs three).

    python benchmarks/masked_cpu.py --check            # the masked view of this CPU, or why it cannot be had
    python benchmarks/masked_cpu.py -- python benchmarks/bench_inference.py --threads 1 --model fast ...

The command sees ``FERLAB_CPU_MASK=avx2``, so ``ferlab.hardware.machine_info`` (and every benchmark JSON)
records the features it really ran with and the mask.  glibc's own string functions are told the same
(``GLIBC_TUNABLES``), since the loader picks them before the library loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_suffix(".c")
HIDDEN_GLIBC = "glibc.cpu.hwcaps=-AVX512F,-AVX512CD,-AVX512BW,-AVX512DQ,-AVX512VL,-AVX512_VNNI,-AVX_VNNI"
MASK = "avx2"


def unavailable() -> str | None:
    """Why the mask cannot run here, or None."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return "needs Linux on x86-64"
    try:
        flags = next((ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")), "").split()
    except OSError:
        return "cannot read /proc/cpuinfo"
    if "cpuid_fault" not in flags:
        return "this CPU or hypervisor cannot make CPUID fault (no cpuid_fault in /proc/cpuinfo)"
    if shutil.which("gcc") is None:
        return "gcc missing (apt-get install gcc)"
    return None


def library() -> Path:
    """The compiled preload library (built on first use, cached by the source's digest)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ferlab"
    lib = cache / f"masked_cpu-{digest}.so"
    if not lib.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            built = Path(tmp) / lib.name
            subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(built), str(SOURCE)], check=True)
            os.replace(built, lib)
    return lib


def environment(base: dict | None = None) -> dict:
    """``base`` (default: this process's environment) with the mask preloaded."""
    env = dict(os.environ if base is None else base)
    env["LD_PRELOAD"] = " ".join(filter(None, [str(library()), env.get("LD_PRELOAD")]))
    env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), HIDDEN_GLIBC]))
    env["FERLAB_CPU_MASK"] = MASK
    return env


def run_python(code: str, args: list[str], *, masked: bool = False, prefix: list[str] | None = None,
               env: dict | None = None, timeout: float = 1800) -> object:
    """Run ``code`` in a fresh Python with ``args`` (as ``sys.argv[1:]``): natively, with the mask (``masked``),
    or behind ``prefix`` (e.g. ``qemu-x86_64 -cpu MODEL``); returns the JSON the worker printed on its line
    starting with ``RESULT``.  The workers of emulated_cpu.py and arch_speed.py run this way."""
    env = environment(env) if masked else (env or dict(os.environ))
    cmd = [*(prefix or []), sys.executable, "-c", code, *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    line = next((t for t in r.stdout.splitlines() if t.startswith("RESULT")), None)
    if r.returncode != 0 or line is None:
        where = "masked" if masked else " ".join(prefix or []) or "native"
        raise RuntimeError(f"worker ({where}) failed: {r.stderr[-2000:]}")
    return json.loads(line[len("RESULT"):])


CHECK = ("from numpy._core._multiarray_umath import __cpu_features__ as c; "
         "print(' '.join(k for k in ('AVX2', 'FMA3', 'AVX512F', 'AVX512BW', 'AVX512VNNI', 'AVX512BF16') if c.get(k)))")


def main(argv: list[str]) -> int:
    why = unavailable()
    if why:
        print(f"masked_cpu: {why}", file=sys.stderr)
        return 2
    if not argv or argv == ["--check"]:
        for label, env in (("native", dict(os.environ)), ("masked", environment())):
            seen = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True)
            print(f"{label}: {seen.stdout.strip() or seen.stderr.strip()}")
        return 0
    if argv[0] == "--":
        argv = argv[1:]
    try:
        env = environment()
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"masked_cpu: cannot build {SOURCE.name} ({e})", file=sys.stderr)
        return 2
    if not argv or shutil.which(argv[0]) is None:
        print(f"masked_cpu: no command to run{f' ({argv[0]!r} not found)' if argv else ''}", file=sys.stderr)
        return 2
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
