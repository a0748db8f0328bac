"""The trainer on the 700-row FER2013 sample: run directory, resume after SIGKILL, safe checkpoints,
schedules, optimisers, losses, DDP on gloo."""

from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ferlab.cli import main
from ferlab.errors import FerlabError
from ferlab.models.weights import load_state_dict
from ferlab.training import TrainConfig, load_config, train
from ferlab.training.losses import class_weights, mix_batch, multi_target_loss, soft_cross_entropy
from ferlab.training.schedule import Plateau, lr_at

torch.set_num_threads(1)

TINY = ["model=fernet_fast", "batch_size=32", "amp=none", "threads=1"]


def _cfg(sample: Path, *extra: str) -> TrainConfig:
    return load_config(None, [f"data={sample}", *TINY, *extra])


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_run_directory_has_everything(fer_sample, tmp_path):
    run = tmp_path / "run"
    summary = train(_cfg(fer_sample, "epochs=2", "max_train_batches=4"), run, progress=False)
    for name in ("config.yaml", "metrics.csv", "curves.png", "last.pt", "best_acc.safetensors",
                 "best_loss.safetensors", "model.safetensors", "summary.json"):
        assert (run / name).is_file(), name
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(float(r["images_per_s"]) > 0 for r in rows)
    assert summary["val_samples"] == 70 and summary["train_samples"] == 560
    assert summary["best_val_acc"] == max(float(r["val_acc"]) for r in rows)
    assert load_config(run / "config.yaml").model == "fernet_fast"
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_learns_on_sample(fer_sample, tmp_path):
    """A few epochs on the sample lower the training loss (the whole pipeline carries signal)."""
    train(_cfg(fer_sample, "epochs=4", "lr=0.05"), tmp_path / "r", progress=False)
    rows = _rows(tmp_path / "r")
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_same_seed_same_weights(fer_sample, tmp_path):
    a = train(_cfg(fer_sample, "epochs=1", "max_train_batches=3"), tmp_path / "a", progress=False)
    b = train(_cfg(fer_sample, "epochs=1", "max_train_batches=3"), tmp_path / "b", progress=False)
    assert a["best_val_loss"] == b["best_val_loss"]
    wa, wb = load_state_dict(tmp_path / "a" / "model.safetensors"), load_state_dict(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("extra", [[], ["ema=0.9"]], ids=["plain", "ema"])
def test_resume_after_sigkill_matches_uninterrupted(fer_sample, tmp_path, extra):
    """Kill a run with SIGKILL after its first epoch, resume it, and get the weights of an uninterrupted run
    (with ``ema`` the weight average is part of the checkpoint too)."""
    args = [f"data={fer_sample}", *TINY, "epochs=3", "max_train_batches=6", *extra]
    ref = tmp_path / "ref"
    train(load_config(None, args), ref, progress=False)

    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ferlab.cli", "train", *args, "--out", str(run), "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.csv").exists() and len(_rows(run)) >= 1):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(_rows(run))
    assert 1 <= done < 3, "the run should have been killed mid-way"
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    ref_rows = _rows(ref)
    assert [r["val_loss"] for r in rows] == [r["val_loss"] for r in ref_rows]
    a, b = load_state_dict(ref / "model.safetensors"), load_state_dict(run / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ema_average_is_what_is_validated_and_kept(fer_sample, tmp_path):
    """With ema=0.9 the kept weights are the running average, not the last raw weights, and the average follows
    ``avg <- d avg + (1 - d) w`` with the warmed-up decay."""
    from ferlab.training.ema import WeightAverage

    run = tmp_path / "ema"
    train(_cfg(fer_sample, "epochs=2", "max_train_batches=4", "ema=0.9", "restore_best=false"), run, progress=False)
    st = torch.load(run / "last.pt", weights_only=True)
    kept = load_state_dict(run / "model.safetensors")
    avg, raw = st["ema"]["weights"], st["model"]
    assert st["ema"]["updates"] == 8
    assert all(torch.equal(kept[k], avg[k]) for k in kept)
    assert any(not torch.equal(avg[k], raw[k]) for k in avg if avg[k].is_floating_point())
    rows = _rows(run)
    assert len(rows) == 2 and all(np.isfinite(float(r["val_loss"])) for r in rows)

    lin = torch.nn.Linear(2, 1)
    ema = WeightAverage(lin, 0.5)
    start = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(1.0)
    ema.update()  # decay min(0.5, 2/11)
    assert torch.allclose(ema.module.weight, start + (1 - 2 / 11))


def test_callbacks_run_in_order_and_the_first_stop_ends_the_run(fer_sample, tmp_path):
    """After each epoch the trainer runs its callbacks in order (best weights, last.pt, metrics, the caller's
    hook, early stopping); one that returns True stops the run and the callbacks after it do not run."""
    from ferlab.training.callbacks import Callback, default_callbacks
    from ferlab.training.trainer import Trainer

    seen = []

    class Spy(Callback):
        def __init__(self, stop_at=None):
            self.stop_at = stop_at

        def on_epoch_end(self, trainer, loop, row):
            # what the callbacks before it wrote is already on disk
            seen.append((self.stop_at, row["epoch"], len(trainer.rundir.read_metrics()),
                         trainer.rundir.load_state()["epoch"]))
            return row["epoch"] == self.stop_at

    names = [type(c).__name__ for c in default_callbacks(on_epoch_end=lambda row: False)]
    assert names == ["BestWeights", "Checkpoint", "MetricsLog", "EpochHook", "EarlyStopping"]
    run = tmp_path / "run"
    cfg = _cfg(fer_sample, "epochs=4", "max_train_batches=2")
    summary = Trainer(cfg, run, progress=False, log=False,
                      callbacks=[*default_callbacks(), Spy(stop_at=2), Spy()]).fit()
    assert seen == [(2, 1, 1, 1), (None, 1, 1, 1), (2, 2, 2, 2)]
    assert summary["epochs_run"] == 2 and len(_rows(run)) == 2
    for name in ("best_acc.safetensors", "best_loss.safetensors", "last.pt", "model.safetensors"):
        assert (run / name).is_file(), name


def test_resume_errors(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a run directory" in err and "Traceback" not in err


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_checkpoint_loading_never_runs_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"model": _Evil()}, f)
    with pytest.raises(FerlabError):
        load_state_dict(bad)
    assert not (tmp_path / "PWNED").exists()


def test_private_test_never_used_for_selection(fer_sample, tmp_path, capsys):
    rc = main(["train", f"data={fer_sample}", *TINY, "val_split=PrivateTest", "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "PrivateTest is for the final report only" in capsys.readouterr().err


def test_recipe_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert main(["train", str(bad)]) == 2
    assert main(["train", "nonsense_key=3"]) == 2
    assert main(["train", "model=no_such_model", "epochs=1", "--out", str(tmp_path / "never")]) == 2
    assert not (tmp_path / "never").exists()
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "unknown config key" in err and "unknown model" in err
    assert "Traceback" not in err


def test_val_fraction_carves_from_training(fer_sample, tmp_path):
    s = train(_cfg(fer_sample, "epochs=1", "max_train_batches=2", "val_fraction=0.25"), tmp_path / "v", progress=False)
    assert s["val_samples"] == 140 and s["train_samples"] == 420


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("sched", ["onecycle", "cosine", "plateau", "exponential"])
def test_optimisers_and_schedules_run(fer_sample, tmp_path, opt, sched):
    lr = "0.01" if opt == "sgd" else "0.001"
    s = train(_cfg(fer_sample, f"optimizer={opt}", f"scheduler={sched}", f"lr={lr}", "epochs=1", "max_train_batches=2",
                   "warmup_epochs=0.5", "early_stopping=val_loss", "patience=1"), tmp_path / f"{opt}-{sched}",
              progress=False)
    assert np.isfinite(s["best_val_loss"])


def test_lr_schedules_shape():
    cfg = TrainConfig(lr=0.1, epochs=10, scheduler="onecycle")
    lrs = [lr_at(cfg, e / 10) for e in range(100)]
    assert abs(max(lrs) - 0.1) < 1e-3 and lrs[0] < 0.01 and lrs[-1] < 1e-3
    assert int(np.argmax(lrs)) == 25  # peak after 25% of the run
    cos = TrainConfig(lr=0.1, epochs=10, scheduler="cosine", warmup_epochs=1)
    assert lr_at(cos, 0.5) == pytest.approx(0.05) and lr_at(cos, 1.0) == pytest.approx(0.1)
    assert lr_at(cos, 9.99) < 1e-3
    exp = TrainConfig(lr=0.1, epochs=10, scheduler="exponential", gamma=0.5)
    assert lr_at(exp, 2.5) == pytest.approx(0.025)
    p = Plateau(factor=0.5, patience=1)
    for v in (1.0, 0.9, 0.95, 0.95):
        p.step(v)
    assert p.scale == 0.5
    with pytest.raises(FerlabError):
        lr_at(TrainConfig(scheduler="bogus"), 1)


def test_losses():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 7, generator=g)
    y = torch.randint(0, 7, (16,), generator=g)
    onehot = F.one_hot(y, 7).float()
    assert soft_cross_entropy(logits, onehot).item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert soft_cross_entropy(logits, onehot, label_smoothing=0.1).item() == pytest.approx(
        F.cross_entropy(logits, y, label_smoothing=0.1).item(), rel=1e-5)
    w = torch.rand(7, generator=g)
    # unnormalised class weighting: mean over samples of w[y] * CE
    ref = (F.cross_entropy(logits, y, reduction="none") * w[y]).mean()
    assert soft_cross_entropy(logits, onehot, w).item() == pytest.approx(ref.item(), rel=1e-5)
    multi = torch.zeros(16, 7)
    multi[:, 0] = 1
    multi[:, 3] = 1
    p = F.softmax(logits, 1)
    assert multi_target_loss(logits, multi).item() == pytest.approx(-(p[:, 0] + p[:, 3]).log().mean().item(), rel=1e-5)
    cw = class_weights(np.array([0, 0, 0, 1]), 2, "balanced")
    assert cw.tolist() == pytest.approx([4 / 6, 2.0])


@pytest.mark.parametrize("mode", [(0.4, 0.0), (0.0, 1.0)])
def test_mixup_cutmix_targets_stay_distributions(mode):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 44, 44, generator=g)
    y = F.one_hot(torch.arange(8) % 7, 7).float()
    xm, ym = mix_batch(x, y, g, *mode)
    assert xm.shape == x.shape and torch.allclose(ym.sum(1), torch.ones(8))
    assert not torch.equal(xm, x)


def test_ddp_two_processes_gloo(fer_sample, tmp_path):
    """torchrun with 2 CPU processes on the gloo backend trains one run; only rank 0 writes it."""
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={29500 + os.getpid() % 1000}", "-m", "ferlab.cli", "train", f"data={fer_sample}", *TINY,
           "epochs=2", "max_train_batches=4", "--out", str(run), "--no-progress"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs_run"] == 2
    assert len(_rows(run)) == 2
