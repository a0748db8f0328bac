"""The record beside every number: the CPU's features as the process sees them, a CPU mask included."""

from __future__ import annotations

from ferlab import hardware


def test_a_cpu_mask_is_recorded_and_hides_what_it_hides(monkeypatch):
    monkeypatch.delenv("FERLAB_CPU_MASK", raising=False)
    real = hardware.cpu_features()
    assert "cpu_mask" not in hardware.machine_info()
    monkeypatch.setenv("FERLAB_CPU_MASK", "avx2")
    masked = hardware.cpu_features()
    assert masked["avx2"] == real["avx2"]
    assert not any(masked[f] for f in hardware.MASKS["avx2"] if f in masked)
    assert not hardware.has_vnni() and not hardware.has_native_bf16()
    info = hardware.machine_info(threads=1)
    assert info["features"] == masked and "avx512_vnni" in info["cpu_mask"] and "masked_cpu.py" in info["cpu_mask"]
    monkeypatch.setenv("FERLAB_CPU_MASK", "no-such-mask")  # only masks that exist change the record
    assert hardware.cpu_features() == real and "cpu_mask" not in hardware.machine_info()
