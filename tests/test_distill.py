"""Knowledge distillation (cached teacher logits, KD loss) and the hardware-chosen training precision."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ferlab.cli import main
from ferlab.errors import FerlabError
from ferlab.training import forward, load_config, train
from ferlab.training.distill import kd_loss, load_teacher
from ferlab.training.forward import resolve_amp

torch.set_num_threads(1)
TINY = ["model=fernet_fast", "batch_size=32", "amp=none", "threads=1"]


def test_kd_loss_is_zero_for_the_teacher_itself_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(16, 7, generator=g)
    assert kd_loss(t, t, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    s = torch.randn(16, 7, generator=g)
    direct = (F.softmax(t / 3, 1) * (F.log_softmax(t / 3, 1) - F.log_softmax(s / 3, 1))).sum(1).mean() * 9
    assert kd_loss(s, t, 3.0).item() == pytest.approx(direct.item(), rel=1e-5)
    # samples without a teacher row do not count
    mask = torch.zeros(16, dtype=torch.bool)
    mask[:4] = True
    s2 = s.clone()
    s2[4:] = 100.0  # anything outside the mask
    assert kd_loss(s2, t, 3.0, mask).item() == pytest.approx(kd_loss(s[:4], t[:4], 3.0).item(), rel=1e-5)


@pytest.fixture(scope="module")
def teacher_run(fer_sample, tmp_path_factory):
    run = tmp_path_factory.mktemp("teacher") / "run"
    train(load_config(None, [f"data={fer_sample}", *TINY, "epochs=2", "max_train_batches=4"]), run, progress=False)
    return run


def test_teacher_file_then_student_run(fer_sample, teacher_run, tmp_path, capsys):
    out = tmp_path / "teacher.npz"
    assert main(["teacher", str(teacher_run), "--data", str(fer_sample), "--tta", "flip", "--out", str(out),
                 "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    with np.load(out) as z:
        ids, logits = z["ids"], z["logits"]
        meta = json.loads(str(z["meta"]))
    assert logits.dtype == np.float16 and logits.shape == (len(ids), 7)
    assert np.allclose(np.exp(logits.astype(np.float64)).sum(1), 1, atol=0.02)  # log-probabilities
    assert meta["split"] == "Training" and meta["tta"] == "flip"
    summary = train(load_config(None, [f"data={fer_sample}", *TINY, "epochs=1", "max_train_batches=3",
                                       f"teacher={out}", "kd_alpha=0.7"]), tmp_path / "student", progress=False)
    assert summary["distillation"]["kd_alpha"] == 0.7
    # the teacher term changes the loss: same seed without it gives other weights
    plain = train(load_config(None, [f"data={fer_sample}", *TINY, "epochs=1", "max_train_batches=3"]),
                  tmp_path / "plain", progress=False)
    rows = [json.loads((tmp_path / d / "summary.json").read_text())["best_val_loss"] for d in ("student", "plain")]
    assert "distillation" not in plain and rows[0] != rows[1]


def test_teacher_refuses_private_test_and_bad_files(fer_sample, teacher_run, tmp_path, capsys):
    assert main(["teacher", str(teacher_run), "--data", str(fer_sample), "--split", "PrivateTest",
                 "--out", str(tmp_path / "t.npz"), "--no-progress"]) == 2
    assert "never on PrivateTest" in capsys.readouterr().err
    assert not (tmp_path / "t.npz").exists()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(FerlabError, match="not a teacher file"):
        load_teacher(bad, np.array(["0"]), ["angry"])
    np.savez(tmp_path / "other.npz", ids=np.array(["x", "y"]), logits=np.zeros((2, 7), np.float16),
             classes=np.array(["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]))
    with pytest.raises(FerlabError, match="no training sample has a teacher row"):
        load_teacher(tmp_path / "other.npz", np.array(["1", "2"]),
                     ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"])
    with pytest.raises(FerlabError, match="differ"):
        load_teacher(tmp_path / "other.npz", np.array(["x"]), ["a", "b"])
    assert main(["train", f"data={fer_sample}", *TINY, "epochs=1", "kd_alpha=0.5", "--out",
                 str(tmp_path / "never")]) == 2
    assert "teacher=FILE" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
    assert main(["train", f"data={fer_sample}", *TINY, "epochs=1", "kd_alpha=0.5", "teacher=nope", "--out",
                 str(tmp_path / "never")]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_model_teacher_sees_the_students_views_and_trains_a_student(fer_sample, tmp_path):
    """A bundled model as the teacher (``teacher=fast``): its logits on a 44 px view are the bundled model's
    own logits on the 48 px face the view was cut from (edge padding, then the graph's centre crop), and a
    student trains with it (a different loss from the same run without it)."""
    from ferlab.data import load_dataset
    from ferlab.inference.classifier import OnnxClassifier
    from ferlab.training.distill import OnnxTeacher

    ds = load_dataset(fer_sample)
    faces = ds.images[:64]
    teacher = OnnxTeacher("fast", ds.classes, crop=44)
    views = torch.from_numpy(faces[:, None, 2:46, 2:46].astype(np.float32))
    np.testing.assert_array_equal(teacher(views).numpy(), OnnxClassifier("fast", calibrated=False).logits(faces))
    # a smaller student view: the teacher sees it with its missing border edge-replicated
    small = OnnxTeacher("fast", ds.classes, crop=40)
    padded = np.pad(faces[:, 4:44, 4:44], ((0, 0), (4, 4), (4, 4)), mode="edge")
    np.testing.assert_array_equal(small(torch.from_numpy(faces[:, None, 4:44, 4:44].astype(np.float32))).numpy(),
                                  OnnxClassifier("fast", calibrated=False).logits(padded))
    for crop in (46, 41):
        with pytest.raises(FerlabError, match="crops 44 px"):
            OnnxTeacher("fast", ds.classes, crop=crop)
    with pytest.raises(FerlabError, match="predicts"):
        OnnxTeacher("ferplus", ds.classes, crop=44)
    args = [f"data={fer_sample}", *TINY, "epochs=1", "max_train_batches=3"]
    summary = train(load_config(None, [*args, "teacher=fast", "kd_alpha=0.7"]), tmp_path / "student", progress=False)
    assert summary["distillation"]["teacher"] == "fast"
    train(load_config(None, args), tmp_path / "plain", progress=False)
    losses = [json.loads((tmp_path / d / "summary.json").read_text())["best_val_loss"] for d in ("student", "plain")]
    assert losses[0] != losses[1]


def test_amp_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr("ferlab.hardware.has_native_bf16", lambda: False)
    auto = resolve_amp("auto", "cpu")
    assert auto["used"] == "none" and "no native bf16" in auto["reason"]
    assert resolve_amp("bf16", "cpu")["reason"].endswith("emulated (slow)")
    assert resolve_amp("none", "cpu") == {"requested": "none", "used": "none", "reason": "requested"}
    monkeypatch.setattr("ferlab.hardware.has_native_bf16", lambda: True)
    assert resolve_amp("auto", "cpu")["used"] == "bf16"


def test_forced_bf16_without_native_support_warns_with_the_measured_slowdown(fer_sample, tmp_path, monkeypatch):
    monkeypatch.setattr("ferlab.hardware.has_native_bf16", lambda: False)
    cfg = load_config(None, [f"data={fer_sample}", "model=fernet_fast", "batch_size=32", "threads=1", "amp=bf16",
                             "epochs=1", "max_train_batches=1"])
    with pytest.warns(UserWarning, match=r"measured [0-9.]+x slower than fp32"):
        summary = train(cfg, tmp_path / "r", progress=False)
    assert summary["amp"]["requested"] == "bf16" and summary["amp"]["bf16_over_fp32_step_time"] > 0
    assert summary["machine"]["features"].keys() >= {"avx2", "avx512_vnni", "avx512_bf16"}
    auto = train(load_config(None, [f"data={fer_sample}", "model=fernet_fast", "batch_size=32", "threads=1",
                                    "epochs=1", "max_train_batches=1"]), tmp_path / "a", progress=False)
    assert auto["amp"] == {"requested": "auto", "used": "none", "reason": auto["amp"]["reason"]}
    assert "amp: auto" in (tmp_path / "a" / "config.yaml").read_text()


def test_int8_export_records_scheme_agreement_and_cpu(teacher_run, tmp_path):
    from ferlab.training.export import DEFAULT_INT8, export_run

    card = export_run(teacher_run, tmp_path / "m.onnx", quantize="int8")
    assert card["int8_scheme"] == DEFAULT_INT8 == "u8s8-rr"
    agree = card["int8_agreement"]
    assert 0.5 <= agree["top1_agreement"] <= 1 and 0 <= agree["int8_accuracy"] <= 1
    assert agree["measured_on"]["libraries"]["onnxruntime"] and "avx512_vnni" in agree["measured_on"]["features"]
    assert agree["measured_on"]["threads"] >= 1


@pytest.mark.parametrize("ratio, used", [(1.4, "none"), (0.5, "bf16")])
def test_amp_auto_with_native_bf16_keeps_the_faster_precision_measured_here(fer_sample, tmp_path, monkeypatch,
                                                                             ratio, used):
    monkeypatch.setattr("ferlab.hardware.has_native_bf16", lambda: True)
    monkeypatch.setattr(forward, "measure_bf16_ratio", lambda model, x, backward=True: ratio)
    monkeypatch.setattr(forward, "_BF16_RATIO", {})
    summary = train(load_config(None, [f"data={fer_sample}", "model=fernet_fast", "batch_size=32", "threads=1",
                                       "epochs=1", "max_train_batches=1"]), tmp_path / "r", progress=False)
    assert summary["amp"]["used"] == used and summary["amp"]["bf16_over_fp32_step_time"] == ratio
    assert f"{ratio:.2f}x the fp32 time" in summary["amp"]["reason"]


def test_measure_bf16_ratio_times_real_steps():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Flatten(), torch.nn.LazyLinear(7))
    for backward in (True, False):
        ratio = forward.measure_bf16_ratio(model, torch.randn(8, 1, 16, 16), steps=1, backward=backward)
        assert ratio > 0 and all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("ratio, used", [(1.3, "none"), (0.5, "bf16")])
def test_inference_amp_auto_is_measured_too(fer_sample, monkeypatch, ratio, used):
    """Teachers and evaluation with amp=auto time the forward pass on this model and keep the faster precision,
    like training does (not the CPU flag alone)."""
    monkeypatch.setattr("ferlab.hardware.has_native_bf16", lambda: True)
    monkeypatch.setattr(forward, "_BF16_RATIO", {})
    seen = []
    monkeypatch.setattr(forward, "measure_bf16_ratio", lambda model, x, backward=True: seen.append(backward) or ratio)
    chosen = []
    real = forward.autocast
    monkeypatch.setattr(forward, "autocast", lambda cfg=None, *, amp=None, device=None: chosen.append(amp) or
                        real(cfg, amp=amp, device=device))
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(7))
    images = np.random.default_rng(0).integers(0, 256, (20, 48, 48), dtype=np.uint8)
    forward.predict_logits(model, images, 44, amp="auto", batch_size=8)
    assert seen == [False] and chosen == [used, used, used]


def test_mixup_is_shown_to_an_online_teacher_and_refused_with_cached_logits(fer_sample, teacher_run, tmp_path,
                                                                             monkeypatch, capsys):
    """Function matching (Beyer et al., 2022): with mixup, a teacher run on every batch gets the very mixed
    images the student trains on; cached logits, computed on unmixed faces, are refused with one line."""
    from ferlab.training import distill, trainer

    mixed, taught = [], []
    real_mix, real_call = trainer.mix_batch, distill.OnnxTeacher.__call__

    def spy_mix(*a, **k):
        out = real_mix(*a, **k)
        assert not torch.equal(out[0], a[0])  # really mixed
        mixed.append(out[0])
        return out

    def spy_teacher(self, views):
        taught.append(views)
        return real_call(self, views)

    monkeypatch.setattr(trainer, "mix_batch", spy_mix)
    monkeypatch.setattr(distill.OnnxTeacher, "__call__", spy_teacher)
    args = [f"data={fer_sample}", *TINY, "epochs=1", "max_train_batches=2", "mixup=1.0", "kd_alpha=0.7"]
    train(load_config(None, [*args, "teacher=fast"]), tmp_path / "student", progress=False)
    assert len(taught) == 2 and all(t is m for t, m in zip(taught, mixed))
    out = tmp_path / "teacher.npz"
    assert main(["teacher", str(teacher_run), "--data", str(fer_sample), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", *args, f"teacher={out}", "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert "unmixed images" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()
