"""Weight soups: the mean of the weights of runs trained from one start, written as a run that exports."""

from __future__ import annotations

import json

import pytest
import torch

from ferlab.cli import main
from ferlab.models.weights import load_state_dict
from ferlab.training import load_config, train
from ferlab.training.build import load_run, prepare_data
from ferlab.training.forward import predict_logits

torch.set_num_threads(1)
TINY = ["model=fernet_fast", "batch_size=32", "amp=none", "threads=1", "epochs=1", "max_train_batches=3"]


@pytest.fixture(scope="module")
def runs(fer_sample, tmp_path_factory):
    root = tmp_path_factory.mktemp("soup")
    train(load_config(None, [f"data={fer_sample}", *TINY]), root / "start", progress=False)
    init = f"init={root / 'start' / 'model.safetensors'}"
    for seed in (1, 2):
        train(load_config(None, [f"data={fer_sample}", *TINY, init, f"seed={seed}"]), root / f"s{seed}",
              progress=False)
    return root


def test_soup_is_the_mean_of_the_weights_and_scores_itself(runs, capsys):
    out = runs / "soup"
    assert main(["soup", str(runs / "s1"), str(runs / "s2"), "--out", str(out), "--no-progress"]) == 0
    assert "soup of 2 runs" in capsys.readouterr().out
    a, b, s = (load_state_dict(runs / d / "model.safetensors") for d in ("s1", "s2", "soup"))
    assert a.keys() == s.keys()
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k])]
    assert moved, "the two seeds trained to the same weights: the test cannot tell a mean from a copy"
    for k in moved:
        torch.testing.assert_close(s[k], (a[k] + b[k]) / 2)
    summary = json.loads((out / "summary.json").read_text())
    model, _, cfg = load_run(out)
    _, val = prepare_data(cfg)
    acc = float((predict_logits(model, val.images, cfg.input_size).argmax(1) == val.labels).mean())
    assert summary["soup"]["val_acc"] == pytest.approx(acc, abs=1e-6)
    assert len(summary["soup"]["ingredient_val_acc"]) == 2
    # it exports like any run, and its card says what it is made of
    onnx = runs / "soup.onnx"
    assert main(["export", str(out), "--out", str(onnx), "--no-calibrate"]) == 0
    card = json.loads(onnx.with_suffix(".json").read_text())
    assert [p.rsplit("/", 1)[-1] for p in card["training"]["soup"]["ingredients"]] == ["s1", "s2"]


def test_soup_refuses_runs_of_other_starts_or_a_single_run(runs, fer_sample, tmp_path, capsys):
    assert main(["soup", str(runs / "s1"), str(runs / "start"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "init differs" in err and err.count("\n") == 1
    assert main(["soup", str(runs / "s1"), "--out", str(tmp_path / "y")]) == 2
    assert "at least two runs" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
