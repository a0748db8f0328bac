"""Evaluation reports, `ferlab evaluate` end to end on a tiny ONNX model, and `ferlab compare`."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from ferlab.calibration import softmax
from ferlab.cli import main
from ferlab.evaluation.metrics import evaluate_predictions
from ferlab.evaluation.report import write_report
from ferlab.labels import FER2013_CLASSES

CLASSES = list(FER2013_CLASSES)


def _synthetic(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(CLASSES)
    logits = rng.normal(size=(n, len(CLASSES)))
    logits[np.arange(n), y] += 1.0
    images = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
    return images, y, softmax(logits)


def _png_ok(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size


def test_write_report_is_self_contained(tmp_path):
    images, y, p = _synthetic()
    res = evaluate_predictions(y, p, CLASSES, bootstrap=200)
    res.clean_accuracy, res.clean_n = 0.5, 50
    out = tmp_path / "rep"
    path = write_report(out, res, images, y, p, CLASSES, title="Synthetic <check>",
                        meta={"model": "synthetic", "split": "PrivateTest", "tta": "none",
                              "command": "ferlab evaluate x --tta none"})
    assert path == out / "report.html"
    page = path.read_text()
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == 7
    for u in uris:
        w, h = _png_ok(base64.b64decode(u))
        assert w > 100 and h > 100
    for c in CLASSES:
        assert c in page
    assert "Synthetic &lt;check&gt;" in page  # escaped
    assert "ferlab evaluate x --tta none" in page and "95% CI" in page and "clean accuracy" in page
    assert "<script" not in page and 'src="http' not in page and "<link" not in page  # needs no other file
    for name in ("confusion", "roc", "reliability", "per_class", "samples", "pr", "selective"):
        _png_ok((out / f"{name}.png").read_bytes())
    assert "Precision-recall" in page and "Selective prediction" in page and "average precision" in page
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(res.accuracy)
    assert metrics["meta"]["model"] == "synthetic" and metrics["clean_n"] == 50
    assert not [f for f in out.iterdir() if f.name.startswith(".")]  # no temporary files left


def test_report_survives_absent_class_and_no_mistakes(tmp_path):
    images, y, _ = _synthetic(n=30)
    keep = y != 1
    images, y = images[keep], y[keep]
    p = np.eye(len(CLASSES))[y] * 0.9 + 0.1 / len(CLASSES)  # every prediction right
    res = evaluate_predictions(y, p, CLASSES, bootstrap=50)
    page = write_report(tmp_path, res, images, y, p, CLASSES).read_text()
    assert "disgust" in page and "n/a" in page
    assert json.loads((tmp_path / "metrics.json").read_text())["per_class"]["disgust"]["auc"] is None


def test_report_shows_pr_intervals_and_selective_thresholds(tmp_path):
    """The new report parts carry the numbers of the result: AP and counts per class, recall / F1 intervals,
    the 90% / 95% thresholds (or "not reached"), all in metrics.json as well."""
    rng = np.random.default_rng(4)
    n = 1200
    y = rng.choice(len(CLASSES), n, p=[0.14, 0.02, 0.14, 0.25, 0.17, 0.11, 0.17])
    logits = rng.normal(size=(n, len(CLASSES))) * 1.5
    logits[np.arange(n), y] += 2.5
    p = softmax(logits)
    images = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
    res = evaluate_predictions(y, p, CLASSES, bootstrap=300)
    page = write_report(tmp_path, res, images, y, p, CLASSES).read_text()
    m = json.loads((tmp_path / "metrics.json").read_text())
    disgust = CLASSES.index("disgust")
    assert m["per_class"]["disgust"]["support"] == int((y == disgust).sum())
    assert m["per_class"]["disgust"]["average_precision"] == pytest.approx(res.ap[disgust])
    assert m["average_precision"]["macro"] == pytest.approx(res.ap_macro)
    lo, hi = m["per_class"]["disgust"]["recall_ci95"]
    assert lo <= res.recall[disgust] <= hi and hi - lo > 0.1  # few images: a wide interval
    assert m["per_class"]["happy"]["f1_ci95"][0] <= res.f1[3] <= m["per_class"]["happy"]["f1_ci95"][1]
    sel = m["selective"]
    hit90 = sel["thresholds"]["accuracy_90"]
    assert hit90["accuracy"] >= 0.9 and hit90["kept"] >= 30
    kept = p.max(1) >= hit90["threshold"]
    assert kept.sum() == hit90["kept"] and (p.argmax(1) == y)[kept].mean() == pytest.approx(hit90["accuracy"])
    assert f"{hit90['threshold']:.3f}" in page
    assert f"{res.ap[disgust]:.3f}" in page  # the class table shows AP
    assert f"{100 * lo:.0f}-{100 * hi:.0f}" in page  # and the recall interval
    curve = m["selective_curve"]
    assert len(curve["coverage"]) == len(curve["accuracy"]) == 100 and curve["accuracy"][-1] == pytest.approx(
        res.accuracy, abs=1e-4)
    assert len(m["pr"]["disgust"]) == len(m["pr"]["recall"]) == 101
    # a model that never reaches 95%: the page says so
    weak = softmax(rng.normal(size=(n, len(CLASSES))))
    res = evaluate_predictions(y, weak, CLASSES, bootstrap=0)
    page = write_report(tmp_path / "weak", res, images, y, weak, CLASSES).read_text()
    assert "95% accuracy: not reached" in page and "not reached" in (tmp_path / "weak" / "metrics.json").read_text()
    assert (tmp_path / "weak" / "selective.png").is_file()


# ----------------------------------------------------------------------------------------------- evaluate

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random fernet_fast exported to ONNX with a minimal card, and the same weights as a run directory."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import yaml

    from ferlab.io import file_digest
    from ferlab.models import create_model
    from ferlab.training.checkpoint import save_weights
    from ferlab.training.config import TrainConfig
    from ferlab.training.export import export_onnx

    torch.manual_seed(0)
    model = create_model("fernet_fast").eval()
    with torch.no_grad():  # make the random net's output depend on its input
        model.head.weight.mul_(200)
    root = tmp_path_factory.mktemp("tiny")
    onnx = root / "tiny.onnx"
    export_onnx(model, onnx, crop=44)
    card = {"name": "tiny", "classes": CLASSES, "input_size": 48, "crop_inside_graph": 44, "temperature": 1.5,
            "sha256": file_digest(onnx)}
    onnx.with_suffix(".json").write_text(json.dumps(card))
    run = root / "run-a"
    run.mkdir()
    save_weights(model, run / "model.safetensors")
    (run / "config.yaml").write_text(yaml.safe_dump(TrainConfig(model="fernet_fast", lr=0.05).to_dict()))
    return onnx, run


def test_evaluate_onnx_end_to_end(tiny_model, fer_sample, tmp_path, capsys):
    onnx, _ = tiny_model
    out = tmp_path / "ev"
    rc = main(["evaluate", str(onnx), str(fer_sample), "--split", "PrivateTest", "--out", str(out),
               "--bootstrap", "200", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "95% CI" in printed and str(out / "report.html") in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 70  # 10 PrivateTest rows per class in the sample
    assert 0 <= m["accuracy"] <= 1 and m["accuracy_ci95"][0] <= m["accuracy"] <= m["accuracy_ci95"][1]
    assert 0 < m["clean_n"] <= 70 and 0 <= m["clean_accuracy"] <= 1
    for key in ("balanced_accuracy", "macro_f1", "top2_accuracy", "top3_accuracy", "ece", "nll", "auc",
                "average_precision", "selective", "pr", "selective_curve"):
        assert key in m
    assert all(len(c["recall_ci95"]) == 2 for c in m["per_class"].values())
    assert set(m["per_class"]) == set(CLASSES)
    assert sum(c["support"] for c in m["per_class"].values()) == 70
    assert m["meta"]["split"] == "PrivateTest" and m["meta"]["tta"] == "none"
    assert m["meta"]["temperature"] == 1.5 and "ferlab evaluate" in m["meta"]["command"]
    assert (out / "report.html").is_file() and "data:image/png;base64," in (out / "report.html").read_text()


def test_onnx_evaluation_needs_no_torch(tiny_model, fer_sample, tmp_path):
    """The inference install (no torch, no scikit-learn) can evaluate ONNX models."""
    import subprocess
    import sys

    code = ("import sys; from ferlab.cli import main; "
            f"rc = main(['evaluate', {str(tiny_model[0])!r}, {str(fer_sample)!r}, '--out', {str(tmp_path)!r}, "
            "'--bootstrap', '50', '--no-progress']); "
            "assert rc == 0 and 'torch' not in sys.modules and 'sklearn' not in sys.modules, rc")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "report.html").is_file()


def test_onnx_tta_matches_torch(tiny_model):
    """The numpy views fed to the ONNX graph (which crops internally) equal the trainer's torch TTA."""
    onnx, run = tiny_model
    from ferlab.evaluation.evaluate import load_model, predict_probs

    x = np.random.default_rng(0).integers(0, 256, (12, 48, 48), dtype=np.uint8)
    mo, mr = load_model(onnx), load_model(run)
    mo.temperature = 1.0
    got = {}
    for tta in ("none", "flip", "tencrop"):
        got[tta] = predict_probs(mo, x, tta, progress=False)
        np.testing.assert_allclose(got[tta], predict_probs(mr, x, tta, progress=False), atol=2e-4)
    assert np.abs(got["none"] - got["tencrop"]).max() > 1e-3  # the views really differ


def test_record_card_keeps_sha256(tiny_model, fer_sample, tmp_path):
    onnx, _ = tiny_model
    import shutil

    from ferlab.zoo import resolve

    model = tmp_path / "m.onnx"
    shutil.copy(onnx, model)
    shutil.copy(onnx.with_suffix(".json"), model.with_suffix(".json"))
    before = json.loads(model.with_suffix(".json").read_text())
    rc = main(["evaluate", str(model), str(fer_sample), "--tta", "flip", "--out", str(tmp_path / "e"),
               "--bootstrap", "100", "--record-card", "--no-progress"])
    assert rc == 0
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["sha256"] == before["sha256"]
    entry = card["metrics"]["PrivateTest_flip"]
    for key in ("accuracy", "accuracy_ci95", "balanced_accuracy", "macro_f1", "recall", "ece", "split", "tta",
                "command", "clean_accuracy"):
        assert key in entry
    assert set(entry["recall"]) == set(CLASSES) and entry["tta"] == "flip"
    resolve(model)  # the sha256 check still passes


def test_unknown_model_exits_2(fer_sample, tmp_path, capsys):
    rc = main(["evaluate", "no-such-model", str(fer_sample), "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "unknown model" in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_missing_split_exits_2(tiny_model, fer_sample, tmp_path, capsys):
    onnx, _ = tiny_model
    rc = main(["evaluate", str(onnx), str(fer_sample), "--split", "Validation", "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "Validation" in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_missing_default_data_exits_2(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(tiny_model[0])]) == 2
    assert "no DATA given" in capsys.readouterr().err


def test_tencrop_refused_without_internal_crop(tiny_model, fer_sample, tmp_path, capsys):
    onnx, _ = tiny_model
    import shutil

    model = tmp_path / "nocrop.onnx"
    shutil.copy(onnx, model)
    card = json.loads(onnx.with_suffix(".json").read_text())
    del card["crop_inside_graph"]
    model.with_suffix(".json").write_text(json.dumps(card))
    assert main(["evaluate", str(model), str(fer_sample), "--tta", "tencrop", "--out", str(tmp_path / "x")]) == 2
    assert "ten-crop" in capsys.readouterr().err


def test_class_alignment():
    from ferlab.errors import FerlabError
    from ferlab.evaluation.evaluate import _align_classes
    from ferlab.labels import FERPLUS_CLASSES

    labels = np.array([0, 1, 2, 3, 6, -1])
    notes: list[str] = []
    six = [c for c in CLASSES if c != "disgust"]  # a model trained without disgust
    y, keep = _align_classes(six, FER2013_CLASSES, labels, "m", notes)
    assert keep.tolist() == [True, False, True, True, True, False]
    assert [six[i] for i in y[keep]] == ["angry", "fear", "happy", "neutral"]
    assert "disgust" in notes[0]
    with pytest.raises(FerlabError, match="--labels"):
        _align_classes(list(FERPLUS_CLASSES), FER2013_CLASSES, labels, "m", [])


def test_ferplus_model_on_fer2013_labels_exits_2(tiny_model, fer_sample, tmp_path, capsys):
    onnx, _ = tiny_model
    import shutil

    from ferlab.labels import FERPLUS_CLASSES

    model = tmp_path / "fp.onnx"
    shutil.copy(onnx, model)
    card = json.loads(onnx.with_suffix(".json").read_text())
    card["classes"] = list(FERPLUS_CLASSES[:7])
    model.with_suffix(".json").write_text(json.dumps(card))
    assert main(["evaluate", str(model), str(fer_sample), "--labels", "fer2013", "--out", str(tmp_path / "x")]) == 2
    assert "ferplus-majority" in capsys.readouterr().err


def test_duplicate_mask():
    from ferlab.evaluation.evaluate import duplicate_mask

    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (50, 48, 48), dtype=np.uint8)
    test = rng.integers(0, 256, (10, 48, 48), dtype=np.uint8)
    test[[2, 7]] = train[[5, 40]]
    test[3] = train[0]
    test[3, 0, 0] ^= 1  # one grey level off: not pixel-identical
    assert np.flatnonzero(duplicate_mask(test, train)).tolist() == [2, 7]


# ----------------------------------------------------------------------------------------------- compare

def _fake_run(root: Path, name: str, lr: float, acc: float, eval_acc: float | None = None) -> Path:
    import yaml

    run = root / name
    run.mkdir(parents=True)
    cfg = {"model": "fernet", "lr": lr, "batch_size": 64, "epochs": 2, "augment": {"crop": 44, "flip": 0.5}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = [{"epoch": e, "train_loss": 1.5 - 0.2 * e, "train_acc": 0.4 + 0.1 * e, "val_loss": 1.4 - 0.1 * e,
             "val_acc": acc - 0.05 * (2 - e), "lr": lr, "images_per_s": 300.0 + e, "epoch_s": 90.0,
             "elapsed_s": 90.0 * e} for e in (1, 2)]
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = {"model": "fernet", "model_options": {}, "classes": CLASSES, "input_size": 44, "labels": "fer2013",
               "params": 1_200_000, "epochs_run": 2, "epochs": 2, "best_epoch_acc": 2, "best_val_acc": acc,
               "best_epoch_loss": 2, "best_val_loss": 1.2, "selected": "best_acc", "val_split": "PublicTest",
               "train_samples": 28709, "val_samples": 3589, "train_time_s": 180.0, "images_per_s_median": 301.0}
    (run / "summary.json").write_text(json.dumps(summary))
    if eval_acc is not None:
        (run / "eval-PrivateTest-flip").mkdir()
        (run / "eval-PrivateTest-flip" / "metrics.json").write_text(json.dumps(
            {"accuracy": eval_acc, "balanced_accuracy": 0.6, "macro_f1": 0.61, "clean_accuracy": 0.66,
             "meta": {"split": "PrivateTest", "tta": "flip"}}))
    return run


def test_compare_shows_differing_config(tmp_path, capsys):
    a = _fake_run(tmp_path, "run-a", lr=0.05, acc=0.66, eval_acc=0.675)
    b = _fake_run(tmp_path, "run-b", lr=0.01, acc=0.62)
    md = tmp_path / "t.md"
    assert main(["compare", str(a), str(b), "--out", str(md)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert "lr" in header.split() and "batch_size" not in header and "augment.crop" not in header
    assert "run-a" in out and "run-b" in out and "66.00%" in out and "1.20M" in out and "301" in out
    assert "PrivateTest/flip acc" in header and "67.50%" in out
    text = md.read_text()
    assert text.startswith("| run |") and "| 0.05 |" in text and "| 0.01 |" in text
    csv_path = tmp_path / "t.csv"
    assert main(["compare", str(a), str(b), "--out", str(csv_path)]) == 0
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["lr"] for r in rows] == ["0.05", "0.01"]
    assert float(rows[0]["PrivateTest/flip acc"]) == pytest.approx(0.675) and rows[1]["PrivateTest/flip acc"] == ""


def test_compare_errors(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "missing")]) == 2
    a = _fake_run(tmp_path, "r", lr=0.1, acc=0.5)
    assert main(["compare", str(a), "--out", str(tmp_path / "t.txt")]) == 2
    err = capsys.readouterr().err
    assert "no such run directory" in err and ".csv or .md" in err


def test_evaluate_run_then_compare(tiny_model, fer_sample, tmp_path, capsys):
    """`ferlab evaluate RUN` writes RUN/eval-<split>-<tta>/, where `ferlab compare` finds it."""
    _, run = tiny_model
    import shutil

    run_copy = tmp_path / "run-a"
    shutil.copytree(run, run_copy)
    assert main(["evaluate", str(run_copy), str(fer_sample), "--bootstrap", "50", "--no-progress"]) == 0
    m = json.loads((run_copy / "eval-PrivateTest-none" / "metrics.json").read_text())
    assert m["meta"]["model_kind"] == "torch run" and m["n"] == 70
    other = _fake_run(tmp_path, "run-b", lr=0.01, acc=0.6)
    capsys.readouterr()
    assert main(["compare", str(run_copy), str(other)]) == 0
    out = capsys.readouterr().out
    assert "PrivateTest/none acc" in out.splitlines()[0]
    assert f"{100 * m['accuracy']:.2f}%" in out


def test_recorded_paths_carry_no_machine_prefix(tiny_model, fer_sample, tmp_path, monkeypatch):
    """Committed metrics.json files must not hold this machine's absolute paths: paths near the working
    directory are recorded relative to it, far ones as given."""
    import shutil

    from ferlab.io import portable_path

    onnx, _ = tiny_model
    work = tmp_path / "project" / "repo"
    (work / "zoo").mkdir(parents=True)
    (tmp_path / "project" / "shared").mkdir()
    model = work / "zoo" / Path(onnx).name
    shutil.copy(onnx, model)
    shutil.copy(Path(onnx).with_suffix(".json"), model.with_suffix(".json"))
    data = tmp_path / "project" / "shared" / Path(fer_sample).name
    shutil.copy(fer_sample, data)
    monkeypatch.chdir(work)
    assert portable_path("/x/y") == "/x/y" and portable_path("rel/p.csv") == "rel/p.csv"
    assert main(["evaluate", str(model), str(data), "--split", "PublicTest", "--out", str(work / "ev"),
                 "--bootstrap", "0", "--no-progress"]) == 0
    meta = json.loads((work / "ev" / "metrics.json").read_text())["meta"]
    assert meta["model_path"] == str(Path("zoo") / model.name)
    assert meta["data"] == str(Path("..") / "shared" / data.name)
