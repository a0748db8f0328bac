"""Transfer workflows on the trainer: cached-feature head training and two-stage fine-tuning, from a run's
own weights (FER2013 7 classes) to another label set (the six classes without disgust)."""

from __future__ import annotations

import json

import pytest
import torch

from ferlab.cli import main
from ferlab.models.weights import load_state_dict
from ferlab.training import load_config, train

torch.set_num_threads(1)
TINY = ["model=fernet_fast", "batch_size=32", "amp=none", "threads=1"]


@pytest.fixture(scope="module")
def base_run(fer_sample, tmp_path_factory):
    run = tmp_path_factory.mktemp("base") / "run"
    train(load_config(None, [f"data={fer_sample}", *TINY, "epochs=1", "max_train_batches=4"]), run, progress=False)
    return run


def _backbone(sd):
    return {k: v for k, v in sd.items() if not k.startswith("head.")}


def test_cached_features_train_only_the_head(fer_sample, base_run, tmp_path):
    run = tmp_path / "fx"
    six = "classes=[angry, fear, happy, sad, surprise, neutral]"
    s = train(load_config(None, [f"data={fer_sample}", *TINY, six, f"init={base_run / 'model.safetensors'}",
                                 "freeze=backbone", "cache_features=true", "epochs=5", "lr=0.01",
                                 "scheduler=cosine"]), run, progress=False)
    assert s["classes"] == ["angry", "fear", "happy", "sad", "surprise", "neutral"]
    assert s["epochs_run"] == 5 and (run / "metrics.csv").exists()
    before, after = load_state_dict(base_run / "model.safetensors"), load_state_dict(run / "model.safetensors")
    assert after["head.weight"].shape[0] == 6
    for k, v in _backbone(before).items():
        assert torch.equal(v, after[k]), k  # the frozen backbone, BN statistics included, is untouched


def test_cache_features_needs_frozen_backbone(fer_sample, tmp_path, capsys):
    rc = main(["train", f"data={fer_sample}", *TINY, "cache_features=true", "--out", str(tmp_path / "x")])
    assert rc == 2 and "cache_features needs freeze: backbone" in capsys.readouterr().err


def test_two_stage_fine_tuning(fer_sample, base_run, tmp_path):
    run = tmp_path / "two"
    stages = ('stages=[{freeze: backbone, epochs: 1, lr: 0.01}, '
              '{unfreeze_top: 1, epochs: 1, lr: 0.005, backbone_lr_scale: 0.5}]')
    s = train(load_config(None, [f"data={fer_sample}", *TINY, "max_train_batches=3",
                                 f"init={base_run / 'model.safetensors'}", stages]), run, progress=False)
    assert s["stages"] == 2 and s["epochs_run"] == 2
    for d in ("stage1", "stage2"):
        assert (run / d / "summary.json").exists()
    base = load_state_dict(base_run / "model.safetensors")
    st1 = load_state_dict(run / "stage1" / "model.safetensors")
    st2 = load_state_dict(run / "model.safetensors")
    # stage 1 trains the head only
    assert all(torch.equal(v, st1[k]) for k, v in _backbone(base).items())
    assert not torch.equal(base["head.weight"], st1["head.weight"])
    # stage 2 unfreezes the top conv block only: the first conv stays, the last conv moves
    convs = sorted(k for k in st2 if k.startswith("features.") and k.endswith(".0.weight"))
    assert torch.equal(st1[convs[0]], st2[convs[0]])
    assert not torch.equal(st1[convs[-1]], st2[convs[-1]])
    # a finished staged run resumes as a no-op
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert json.loads((run / "summary.json").read_text())["stages"] == 2


def test_cards_name_the_labels_of_the_starting_weights(fer_sample, base_run, tmp_path):
    """A fine-tuned model has seen the labels its starting weights were trained on: its card (and an
    ensemble's card) says which, so "extra labels" are never silent."""
    from ferlab.ensemble import export_ensemble
    from ferlab.io import portable_path
    from ferlab.training.export import export_run

    run = tmp_path / "ft"
    six = "classes=[angry, fear, happy, sad, surprise, neutral]"
    train(load_config(None, [f"data={fer_sample}", *TINY, six, "epochs=1", "max_train_batches=2",
                             f"init={base_run / 'model.safetensors'}"]), run, progress=False)
    card = export_run(run, tmp_path / "ft.onnx", calibrate=False)
    # recorded as a portable path: relative when pytest's tmp folder lies beside the checkout (a clone in /tmp)
    assert card["training"]["initialised_from"] == {"weights": portable_path(base_run / "model.safetensors"),
                                                    "labels": "fer2013"}
    assert export_run(base_run, tmp_path / "base.onnx", calibrate=False)["training"]["initialised_from"] is None
    ens = export_ensemble([run, tmp_path / "ft.onnx"], tmp_path / "ens.onnx", calibrate=False)
    assert ens["training"]["initialised_from"] == [card["training"]["initialised_from"]] * 2
