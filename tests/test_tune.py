"""ferlab tune: Optuna trials on the sample, trials.csv, a loadable best.yaml, pruning, PrivateTest refused."""

from __future__ import annotations

import csv

import pytest
import torch

from ferlab.cli import main
from ferlab.errors import FerlabError
from ferlab.training import load_config
from ferlab.tune import augment_at, model_space, parse_val, tune

torch.set_num_threads(1)

TINY = ["model=fernet_fast", "batch_size=32", "amp=none", "threads=1", "max_train_batches=2"]


def test_two_trials_write_trials_csv_and_best_yaml(fer_sample, tmp_path, capsys):
    out = tmp_path / "tune"
    rc = main(["tune", f"data={fer_sample}", *TINY, "epochs=40", "--trials", "2", "--epochs", "1", "--out", str(out)])
    assert rc == 0
    assert "best recipe" in capsys.readouterr().out
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["number"] for r in rows] == ["0", "1"]
    assert all(r["state"] == "COMPLETE" and 0 <= float(r["value"]) <= 1 and r["epochs_run"] == "1" for r in rows)
    for key in ("optimizer", "batch_size", "scheduler", "dropout", "aug_strength"):
        assert key in rows[0]
    cfg = load_config(out / "best.yaml")  # a full recipe
    assert cfg.model == "fernet_fast" and cfg.epochs == 40 and cfg.max_train_batches == 0
    assert cfg.val_split == "PublicTest"
    best = max(rows, key=lambda r: float(r["value"]))
    assert cfg.optimizer == best["optimizer"] and cfg.batch_size == int(best["batch_size"])
    assert cfg.scheduler == best["scheduler"]
    assert cfg.model_options["dropout"] == pytest.approx(float(best["dropout"]), abs=1e-4)
    assert cfg.augment["rotate"] == pytest.approx(20 * float(best["aug_strength"]), abs=1e-2)
    assert (out / "trial_000" / "model.safetensors").is_file()
    # running the same command again resumes: nothing left to do, the same best
    assert main(["tune", f"data={fer_sample}", *TINY, "--trials", "2", "--epochs", "1", "--out", str(out)]) == 0
    assert "resuming: 2 trial(s) already done" in capsys.readouterr().out


def test_validation_fraction_and_pruning(fer_sample, tmp_path):
    res = tune(None, tmp_path / "t", trials=4, epochs=2, val="0.2", overrides=[f"data={fer_sample}", *TINY, "lr=0.01"],
               log=False)
    cfg = load_config(res["best_yaml"])
    assert cfg.val_fraction == 0.2
    assert len(res["trials"]) == 4
    assert {r["state"] for r in res["trials"]} <= {"COMPLETE", "PRUNED"}
    assert all(r["epochs_run"] in (1, 2) for r in res["trials"])


def test_private_test_is_refused(fer_sample, tmp_path, capsys):
    rc = main(["tune", f"data={fer_sample}", *TINY, "--val", "PrivateTest", "--trials", "1", "--epochs", "1",
               "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "PrivateTest" in err and "final report" in err
    with pytest.raises(FerlabError, match="final report"):
        tune(None, tmp_path / "y", trials=1, epochs=1, overrides=[f"data={fer_sample}", *TINY, "val_split=PrivateTest"])
    assert not (tmp_path / "y" / "trial_000").exists()


def test_search_space_helpers():
    assert parse_val("PublicTest") == ("PublicTest", 0.0)
    assert parse_val("0.1") == (None, 0.1)
    for bad in ("PrivateTest", "1.5", "0"):
        with pytest.raises(FerlabError):
            parse_val(bad)
    assert model_space("fernet_fast") == {"dropout": True, "activation": []}
    space = model_space("ferplus_net")  # takes activation=relu|sigmoid
    assert space["dropout"] and sorted(space["activation"]) == ["relu", "sigmoid"]
    aug = augment_at(0.5, {"crop": 44, "flip": 0.5})
    assert aug["crop"] == 44 and aug["rotate"] == 10 and aug["erasing"] == 0.2
    assert augment_at(0.0, {"crop": 44})["rotate"] == 0


def test_pruned_trials_stop_training_early(fer_sample, tmp_path, monkeypatch):
    """The pruner's verdict reaches the trainer through on_epoch_end: a pruned trial trains no further epochs."""
    import optuna

    monkeypatch.setattr(optuna.pruners, "MedianPruner", lambda **kw: optuna.pruners.ThresholdPruner(lower=1.01))
    out = tmp_path / "p"
    with pytest.raises(FerlabError, match="no trial completed"):
        tune(None, out, trials=2, epochs=3, overrides=[f"data={fer_sample}", *TINY], log=False)
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows] == ["PRUNED", "PRUNED"]
    for r in rows:
        with open(f"{r['run_dir']}/metrics.csv") as f:
            assert len(list(csv.DictReader(f))) == 1  # stopped after epoch 1 of 3
    assert not (out / "best.yaml").exists()
