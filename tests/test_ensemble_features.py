"""Soft-voting ensembles (python and one exported ONNX graph) and CNN features + SVM / RF / logistic regression."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
import torch

from ferlab.calibration import softmax
from ferlab.cli import main
from ferlab.data import load_dataset
from ferlab.ensemble import SoftVotingEnsemble, export_ensemble, normalize_weights, soft_vote
from ferlab.errors import FerlabError
from ferlab.inference.classifier import OnnxClassifier
from ferlab.training import load_config, train
from ferlab.training.build import load_run
from ferlab.training.export import export_run
from ferlab.training.forward import predict_logits

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fer_sample):
    """Two tiny fernet_fast runs on the sample (different seeds and balancing)."""
    root = tmp_path_factory.mktemp("ens")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FERLAB_CACHE", str(root / "cache"))
        out = []
        for seed, extra in ((0, []), (1, ["balance=targeted", "balance_counts={disgust: '+16'}"])):
            run = root / f"r{seed}"
            cfg = load_config(None, [f"data={fer_sample}", "model=fernet_fast", "epochs=1", "max_train_batches=3",
                                     "batch_size=32", "amp=none", "threads=1", f"seed={seed}", *extra])
            train(cfg, run, progress=False)
            out.append(run)
    return out


@pytest.fixture(scope="module")
def test_images(fer_sample):
    return load_dataset(fer_sample).by_split("PrivateTest")


def _probs(run, images):
    model, summary, cfg = load_run(run)
    return softmax(predict_logits(model, images, cfg.input_size, amp="none"))


def test_probabilities_are_the_weighted_mean(runs, test_images):
    p1, p2 = (_probs(r, test_images.images) for r in runs)
    ens = SoftVotingEnsemble(runs, weights=[3, 1])
    p = ens.predict_proba(test_images.images)
    np.testing.assert_allclose(p, 0.75 * p1 + 0.25 * p2, atol=1e-6)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(SoftVotingEnsemble(runs).predict_proba(test_images.images), (p1 + p2) / 2, atol=1e-6)
    np.testing.assert_allclose(np.exp(ens.logits(test_images.images)), p, atol=1e-6)
    assert ens.classes == list(load_run(runs[0])[1]["classes"])


def test_weights_are_validated():
    np.testing.assert_allclose(normalize_weights([2, 2, 4], 3), [0.25, 0.25, 0.5])
    np.testing.assert_allclose(normalize_weights(None, 4), [0.25] * 4)
    for bad in ([1], [1, -1], [0, 0], [1, float("nan")]):
        with pytest.raises(FerlabError):
            normalize_weights(bad, 2)
    with pytest.raises(FerlabError, match="same output shape|shape"):
        soft_vote([np.ones((2, 7)) / 7, np.ones((3, 7)) / 7])


def _graph_io(path):
    m = onnx.load(str(path))
    inits = {t.name for t in m.graph.initializer}
    return [i.name for i in m.graph.input if i.name not in inits], [o.name for o in m.graph.output]


def test_exported_single_graph_matches_python(runs, test_images, tmp_path, fer_sample):
    x = test_images.images
    ens = SoftVotingEnsemble(runs, weights=[2, 1])
    card = export_ensemble(runs, tmp_path / "ens.onnx", weights=[2, 1], data=fer_sample)
    assert _graph_io(tmp_path / "ens.onnx") == (["image"], ["logits"])
    clf = OnnxClassifier(tmp_path / "ens.onnx", calibrated=False)  # also checks the card's sha256
    np.testing.assert_allclose(clf.predict_proba(x), ens.predict_proba(x), atol=1e-4)
    assert card["classes"] == ens.classes and card["input_size"] == 48
    assert card["calibration"]["split"] == "PublicTest" and card["temperature"] > 0
    assert [m["weight"] for m in card["ensemble"]["members"]] == pytest.approx([2 / 3, 1 / 3], abs=1e-5)
    assert "torch module" in card["ensemble"]["built_by"]
    assert card["params"] == sum(m["params"] for m in card["ensemble"]["members"])
    with pytest.raises(FerlabError, match="PrivateTest"):
        export_ensemble(runs, tmp_path / "bad.onnx", val_split="PrivateTest")

    # a run + an ONNX model (with its own card temperature): member graphs joined with onnx
    member = export_run(runs[1], tmp_path / "m1" / "m1.onnx")
    assert member["temperature"] != 1.0
    mixed = [runs[0], tmp_path / "m1" / "m1.onnx"]
    ens2 = SoftVotingEnsemble(mixed, weights=[1, 3])
    card2 = export_ensemble(mixed, tmp_path / "mixed.onnx", weights=[1, 3], calibrate=False)
    assert "joined" in card2["ensemble"]["built_by"]
    assert _graph_io(tmp_path / "mixed.onnx") == (["image"], ["logits"])
    got = OnnxClassifier(tmp_path / "mixed.onnx", calibrated=False).predict_proba(x)
    np.testing.assert_allclose(got, ens2.predict_proba(x), atol=1e-4)
    expect = 0.25 * _probs(runs[0], x) + 0.75 * softmax(OnnxClassifier(tmp_path / "m1" / "m1.onnx",
                                                                       calibrated=False).logits(x), member["temperature"])
    np.testing.assert_allclose(got, expect, atol=1e-4)

    # the card says how its members are stored: int8 members make an int8 ensemble, never "none"
    assert card["quantization"] == card2["quantization"] == "none"
    export_run(runs[0], tmp_path / "q" / "q0.onnx", quantize="int8", calibrate=False)
    export_run(runs[1], tmp_path / "q" / "q1.onnx", quantize="int8", calibrate=False)
    q = [tmp_path / "q" / "q0.onnx", tmp_path / "q" / "q1.onnx"]
    assert export_ensemble(q, tmp_path / "q.onnx", calibrate=False)["quantization"] == "int8"
    mixed_q = export_ensemble([q[0], tmp_path / "m1" / "m1.onnx"], tmp_path / "mq.onnx", calibrate=False)
    assert mixed_q["quantization"] == "mixed (int8, none)"


def test_ensemble_cli_evaluates_and_exports(runs, fer_sample, tmp_path, capsys, test_images):
    out, onnx_path = tmp_path / "report", tmp_path / "exp" / "e.onnx"
    rc = main(["ensemble", str(runs[0]), str(runs[1]), "--data", str(fer_sample), "--split", "PrivateTest",
               "--weights", "1", "1", "--out", str(out), "--export", str(onnx_path), "--bootstrap", "0",
               "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "ENSEMBLE" in text and "vs best member" in text
    s = json.loads((out / "ensemble.json").read_text())
    p = SoftVotingEnsemble(runs).predict_proba(test_images.images)
    assert s["ensemble"]["accuracy"] == pytest.approx(float((p.argmax(1) == test_images.labels).mean()))
    assert len(s["members"]) == 2 and s["n"] == 70 and s["split"] == "PrivateTest"
    assert (out / "report.html").is_file() and (out / "metrics.json").is_file()
    assert onnx_path.is_file() and onnx_path.with_suffix(".json").is_file()
    rc = main(["ensemble", str(runs[0]), str(runs[1]), "--data", str(fer_sample), "--weights", "1"])
    assert rc == 2 and "one weight per member" in capsys.readouterr().err


def test_features_match_the_network_and_classifiers_run(runs, fer_sample, tmp_path, test_images):
    from ferlab.features import run_features
    from ferlab.training.forward import extract_features

    model, _, cfg = load_run(runs[0])
    f = extract_features(model, test_images.images, cfg.input_size)
    assert f.shape == (70, model.num_features) and f.dtype == np.float32
    with torch.no_grad():  # the head on the features gives the network's own (centre-crop) logits
        logits = model.head(torch.as_tensor(f)).numpy()
    np.testing.assert_allclose(logits, predict_logits(model, test_images.images, cfg.input_size, amp="none"),
                               atol=1e-4)

    s = run_features(runs[0], fer_sample, "all", out=tmp_path / "feat", bootstrap=0, log=False)
    assert set(s["results"]) == {"cnn", "svm", "rf", "logreg"}
    assert s["selection_split"] == "PublicTest" and s["test_split"] == "PrivateTest"
    assert s["n"] == {"train": 560, "selection": 70, "test": 70}
    for name, r in s["results"].items():
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["macro_f1"] <= 1 and len(r["recall"]) == 7, name
    assert s["results"]["svm"]["temperature"] > 0
    best_c = max(s["results"]["logreg"]["selection"], key=lambda r: r["val_accuracy"])["param"]
    assert s["results"]["logreg"]["param"]["C"] == best_c  # chosen on PublicTest
    for name in ("cnn", "svm", "rf", "logreg"):
        m = json.loads((tmp_path / "feat" / name / "metrics.json").read_text())
        assert m["n"] == 70
    with pytest.raises(FerlabError, match="PrivateTest"):
        run_features(runs[0], fer_sample, "svm", val_split="PrivateTest")


def test_features_cli(runs, fer_sample, tmp_path, capsys):
    out = tmp_path / "f"
    rc = main(["features", str(runs[0]), "--data", str(fer_sample), "--classifier", "logreg,svm", "--out", str(out),
               "--no-report", "--bootstrap", "0"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "logreg" in text and "svm" in text and "cnn" in text
    s = json.loads((out / "summary.json").read_text())
    assert set(s["results"]) == {"cnn", "logreg", "svm"}
    assert not (out / "svm").exists()
    rc = main(["features", str(runs[0]), "--data", str(fer_sample), "--classifier", "knn", "--out", str(out)])
    assert rc == 2 and "unknown classifier" in capsys.readouterr().err


def test_ensemble_of_onnx_members_needs_no_torch_to_evaluate(runs, fer_sample, tmp_path):
    """Evaluating an all-ONNX ensemble runs on ONNX Runtime alone (checked in a subprocess without torch)."""
    import subprocess
    import sys

    export_run(runs[0], tmp_path / "a.onnx", calibrate=False)
    export_run(runs[1], tmp_path / "b.onnx", calibrate=False)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from ferlab.ensemble import evaluate_ensemble\n"
        f"s = evaluate_ensemble([{str(tmp_path / 'a.onnx')!r}, {str(tmp_path / 'b.onnx')!r}], {str(fer_sample)!r}, "
        "'PrivateTest', bootstrap=0, progress=False)\n"
        "print(round(s['ensemble']['accuracy'], 6))\n")
    env = {**os.environ, "FERLAB_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    p = SoftVotingEnsemble([tmp_path / "a.onnx", tmp_path / "b.onnx"]).predict_proba(
        load_dataset(fer_sample).by_split("PrivateTest").images)
    acc = float((p.argmax(1) == load_dataset(fer_sample).by_split("PrivateTest").labels).mean())
    assert float(r.stdout.strip().splitlines()[-1]) == pytest.approx(acc, abs=1e-6)
