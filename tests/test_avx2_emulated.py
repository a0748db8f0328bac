"""The bundled int8 models on a CPU without AVX-512 or VNNI, whatever CPU runs the tests (issues 16 and 24).

ONNX Runtime picks its int8 kernels by CPUID: with VNNI one instruction multiplies and adds uint8 x int8 into
int32; on AVX2 alone ``vpmaddubsw`` adds pairs of products into int16 first, which saturates unless the weights
keep to 7 bits (what ``u8s8-rr`` is for).  tests/test_quant_agreement.py checks the models on the CI machine's
own CPU; here the same graphs also run under ``qemu-x86_64 -cpu EPYC-Milan`` (user-mode emulation of an AMD
Zen 3: AVX2 and FMA, no AVX-512, no VNNI), so the AVX2 kernels are exercised even on a VNNI machine, and their
predictions are compared with the native ones on real PublicTest faces.  A control shows the emulation reaches
those kernels: the old ``u8s8`` scheme with an int8 stem, which saturated on AVX2-only machines (84% agreement
with fp32 on one), disagrees with itself between native and emulated runs.

Emulation is slow (~150 ms a face for ``default``), so each model sees a few hundred faces here; the worker and
the whole-split run are benchmarks/emulated_cpu.py.  Where the CPU lets CPUID fault, ``benchmarks/masked_cpu.py``
runs the same kernels at native speed (checked against qemu on the control, to the bit), and the bundled models
are checked on the whole PublicTest that way.  ``make test`` installs qemu-user; without it the tests fail
in CI (``CI`` set) and are skipped elsewhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FER_FULL, ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from emulated_cpu import CPU_MODEL, controls, qemu, run_graphs  # noqa: E402

FACES = {"fast": 256, "default": 128, "ferplus": 48}  # emulated time, not accuracy, sets these

pytestmark = pytest.mark.slow


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI: `make test` must provide it: `make system` apt-installs qemu-user)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    if qemu() is None:
        _unavailable("qemu-x86_64 missing: install Debian's qemu-user")
    if not FER_FULL.exists():
        pytest.skip(f"{FER_FULL} not present")
    from ferlab.data.fer2013 import load_fer2013_csv

    path = tmp_path_factory.mktemp("avx2") / "faces.npy"
    np.save(path, load_fer2013_csv(FER_FULL).by_split("PublicTest").images[:max(FACES.values())])
    return path


def run(faces: Path, graphs: dict[str, tuple[Path, int]], emulate: bool) -> tuple[dict, dict]:
    return run_graphs(faces, graphs, CPU_MODEL if emulate else None, timeout=1800)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


@pytest.fixture(scope="module")
def bundled(faces):
    from ferlab.zoo import resolve

    graphs = {name: (resolve(name)[0], n) for name, n in FACES.items()}
    native, _ = run(faces, graphs, emulate=False)
    emulated, cpu = run(faces, graphs, emulate=True)
    return native, emulated, cpu


def test_the_emulated_cpu_has_avx2_and_neither_avx512_nor_vnni(bundled):
    cpu = bundled[2]
    assert cpu["AVX2"] and cpu["FMA3"]
    assert not cpu["AVX512F"] and not cpu["AVX512VNNI"] and not cpu["AVXVNNI"]


@pytest.mark.parametrize("name", sorted(FACES))
def test_bundled_model_predicts_the_same_without_vnni(bundled, name):
    native, emulated, _ = bundled
    assert native[name].shape == emulated[name].shape == (FACES[name], native[name].shape[1])
    # measured: identical logits for all three (integer arithmetic, no saturation with 7-bit weights); the bound
    # leaves room for the fp32 stem's summation order on other hosts, far under what saturation moves (0.68-9.6)
    assert agreement(native[name], emulated[name]) >= 0.99, name
    assert np.abs(native[name] - emulated[name]).max() < 0.1, name


@pytest.fixture(scope="module")
def control(faces, tmp_path_factory):
    """8-bit weights with an int8 stem (the scheme issue 16 replaced), on the bundled fast's weights: its
    logits natively and emulated."""
    pytest.importorskip("torch")
    from ferlab.data.fer2013 import load_fer2013_csv

    name, path, _ = controls(tmp_path_factory.mktemp("control"), load_fer2013_csv(FER_FULL).by_split("Training"))[0]
    assert "int8 stem" in name
    graphs = {"u8s8": (path, FACES["fast"])}
    return graphs, run(faces, graphs, emulate=False)[0]["u8s8"], run(faces, graphs, emulate=True)[0]["u8s8"]


def test_the_emulation_reaches_the_saturating_kernels(control):
    """The control changes predictions on the emulated AVX2 CPU, so the test above could fail."""
    _, native, emulated = control
    assert agreement(native, emulated) < 0.97


def test_the_masked_cpu_runs_the_emulated_cpus_kernels_at_native_speed(faces, control):
    """benchmarks/masked_cpu.py (AVX-512 and VNNI hidden from CPUID on this very core, for timing AVX2 kernels)
    gives the control the emulated CPU's logits to the bit, not the native ones: it reaches the same kernels."""
    import masked_cpu

    why = masked_cpu.unavailable()
    if why:
        pytest.skip(f"masked CPU: {why}")
    graphs, native, emulated = control
    masked, cpu = run_graphs(faces, graphs, "masked", timeout=600)
    assert cpu["AVX2"] and not cpu["AVX512F"] and not cpu["AVX512VNNI"] and not cpu["AVXVNNI"]
    np.testing.assert_array_equal(masked["u8s8"], emulated)
    assert agreement(masked["u8s8"], native) < 0.97


def test_bundled_models_on_avx2_kernels_over_the_whole_public_test(tmp_path):
    """Where CPUID can fault, the masked CPU (the emulated CPU's kernels, shown equal above, at native speed)
    checks every bundled model on all 3,589 PublicTest faces rather than the few hundred qemu has time for."""
    import masked_cpu

    why = masked_cpu.unavailable()
    if why:
        pytest.skip(f"masked CPU: {why}")
    if not FER_FULL.exists():
        pytest.skip(f"{FER_FULL} not present")
    from ferlab.data.fer2013 import load_fer2013_csv
    from ferlab.zoo import resolve

    faces = tmp_path / "public.npy"
    np.save(faces, load_fer2013_csv(FER_FULL).by_split("PublicTest").images)
    graphs = {name: (resolve(name)[0], 3589) for name in FACES}
    native, _ = run_graphs(faces, graphs, None, timeout=900)
    masked, cpu = run_graphs(faces, graphs, "masked", timeout=900)
    assert not cpu["AVX512VNNI"] and not cpu["AVXVNNI"]
    for name in FACES:
        assert native[name].shape == masked[name].shape == (3589, native[name].shape[1])
        assert agreement(native[name], masked[name]) >= 0.99, name
        assert np.abs(native[name] - masked[name]).max() < 0.1, name


def test_the_masked_cpu_command_line(capsys):
    """`python benchmarks/masked_cpu.py --check` shows numpy's view with and without the mask; a missing command
    is one line and exit 2, never a traceback."""
    import masked_cpu

    if masked_cpu.unavailable():
        assert masked_cpu.main(["--check"]) == 2
        assert capsys.readouterr().err.startswith("masked_cpu: ")
        return
    assert masked_cpu.main(["--check"]) == 0
    native, masked = capsys.readouterr().out.splitlines()
    assert "AVX2" in masked and "AVX512F" not in masked and "AVX512VNNI" not in masked
    assert native.startswith("native:") and masked.startswith("masked:")
    assert masked_cpu.main(["--", "no-such-command-here"]) == 2
    assert capsys.readouterr().err.strip() == "masked_cpu: no command to run ('no-such-command-here' not found)"
