"""The kept checkpoint is the one reported: with ``select_metric=val_loss`` the end-of-training line,
summary.json and ``ferlab compare`` name the lowest-loss epoch and its numbers, not the best-accuracy one."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ferlab.cli import main
from ferlab.commands.train import selection_line
from ferlab.evaluation.compare import read_run, selected_checkpoint

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

TINY = ["model=fernet_fast", "batch_size=32", "amp=none", "threads=1"]


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _fake_run(root: Path, name: str, **summary_extra) -> Path:
    """A finished run whose best-accuracy epoch (3) differs from its lowest-loss epoch (1)."""
    import yaml

    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "fernet", "select_metric": "val_loss", "epochs": 3}))
    rows = [{"epoch": 1, "val_loss": 1.10, "val_acc": 0.55, "images_per_s": 300.0, "elapsed_s": 60.0},
            {"epoch": 2, "val_loss": 1.20, "val_acc": 0.58, "images_per_s": 300.0, "elapsed_s": 120.0},
            {"epoch": 3, "val_loss": 1.30, "val_acc": 0.61, "images_per_s": 300.0, "elapsed_s": 180.0}]
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = {"model": "fernet", "params": 1_000_000, "epochs_run": 3, "epochs": 3, "best_epoch_acc": 3,
               "best_val_acc": 0.61, "best_epoch_loss": 1, "best_val_loss": 1.10, "selected": "best_loss",
               "train_time_s": 180.0, "images_per_s_median": 300.0, **summary_extra}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


@pytest.mark.parametrize("new_fields", [True, False], ids=["summary-with-selected-epoch", "older-summary"])
def test_compare_names_the_kept_epoch(tmp_path, capsys, new_fields):
    extra = {"selected_epoch": 1, "selected_val_acc": 0.55, "selected_val_loss": 1.10} if new_fields else {}
    run = _fake_run(tmp_path, "by-loss", **extra)
    rec = read_run(run)
    assert (rec["kept epoch"], rec["selected by"], rec["val acc"], rec["val loss"]) == (1, "val loss", 0.55, 1.10)
    assert main(["compare", str(run)]) == 0
    out = capsys.readouterr().out
    header, _, row = out.splitlines()[:3]
    assert "kept epoch" in header and "best epoch" not in header
    assert "55.00%" in row and "61.00%" not in row  # the kept epoch's accuracy, not the best one


def test_compare_running_run_uses_its_select_metric(tmp_path):
    run = _fake_run(tmp_path, "running")
    (run / "summary.json").unlink()
    rec = read_run(run)
    assert (rec["kept epoch"], rec["selected by"], rec["val acc"], rec["val loss"]) == (1, "val loss", 0.55, 1.10)


def test_selection_line_for_a_loss_selected_run():
    s = {"selected": "best_loss", "selected_epoch": 1, "selected_val_acc": 0.55, "selected_val_loss": 1.1,
         "best_epoch_acc": 3, "best_val_acc": 0.61, "best_epoch_loss": 1, "best_val_loss": 1.1}
    line = selection_line(s)
    assert line.startswith("kept epoch 1 (lowest validation loss): validation accuracy 0.5500, loss 1.1000")
    assert "best validation accuracy 0.6100 was at epoch 3" in line
    assert selected_checkpoint(s, []) == (1, "val loss", 0.55, 1.1)
    acc_run = {**s, "selected": "best_acc", "selected_epoch": 3, "selected_val_acc": 0.61, "selected_val_loss": 1.3}
    assert selection_line(acc_run) == ("kept epoch 3 (best validation accuracy): validation accuracy 0.6100, "
                                       "loss 1.3000")


def test_real_run_selected_by_loss_reports_the_kept_checkpoint(fer_sample, tmp_path, capsys):
    run = tmp_path / "loss"
    rc = main(["train", f"data={fer_sample}", *TINY, "epochs=3", "max_train_batches=3", "lr=0.2",
               "select_metric=val_loss", "--out", str(run), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    rows = _rows(run)
    best_loss = min(rows, key=lambda r: r["val_loss"])
    assert summary["selected"] == "best_loss"
    assert summary["selected_epoch"] == summary["best_epoch_loss"] == int(best_loss["epoch"])
    assert summary["selected_val_loss"] == pytest.approx(best_loss["val_loss"])
    assert summary["selected_val_acc"] == pytest.approx(best_loss["val_acc"])
    # model.safetensors holds exactly the weights of that epoch
    assert (run / "model.safetensors").read_bytes() == (run / "best_loss.safetensors").read_bytes()
    assert f"kept epoch {summary['selected_epoch']} (lowest validation loss)" in printed
    assert f"validation accuracy {best_loss['val_acc']:.4f}" in printed
    rec = read_run(run)
    assert rec["kept epoch"] == summary["selected_epoch"] and rec["val acc"] == pytest.approx(best_loss["val_acc"])


def test_real_run_without_restore_best_keeps_the_last_epoch(fer_sample, tmp_path, capsys):
    run = tmp_path / "last"
    assert main(["train", f"data={fer_sample}", *TINY, "epochs=2", "max_train_batches=1", "restore_best=false",
                 "--out", str(run), "--no-progress"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    last = _rows(run)[-1]
    assert summary["selected"] == "last" and summary["selected_epoch"] == 2
    assert summary["selected_val_acc"] == pytest.approx(last["val_acc"])
    assert "kept epoch 2 (last epoch)" in capsys.readouterr().out
