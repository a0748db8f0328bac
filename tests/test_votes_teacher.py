"""scripts/votes_teacher.py: a cached teacher tilted by FER+ votes, on hand-made vote rows."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import ROOT
from test_data_ferplus import _write_pair

from ferlab.data.fer2013 import load_fer2013_csv
from ferlab.labels import FER2013_CLASSES
from ferlab.training.distill import load_teacher, save_teacher

sys.path.insert(0, str(ROOT / "scripts"))
import votes_teacher  # noqa: E402


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)) - x.max(1, keepdims=True)


def test_tilt_is_a_renormalised_product_of_teacher_and_evidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 7)) * 3
    post = rng.dirichlet(np.ones(7), size=5)
    prior = rng.dirichlet(np.ones(7))
    assert np.allclose(votes_teacher.tilt(logits, post, prior, 0.0), _log_softmax(logits))
    q = votes_teacher.tilt(logits, post, prior, 0.5)
    assert np.allclose(np.exp(q).sum(1), 1.0)
    shift = q - _log_softmax(logits) - 0.5 * (np.log(post) - np.log(prior))  # one constant a row: the renormaliser
    assert np.allclose(shift, shift[:, :1])
    strong = np.full((1, 7), 0.01)
    strong[0, 2] = 0.94
    flat = np.zeros((1, 7))
    assert votes_teacher.tilt(flat, strong, np.full(7, 1 / 7), 1.0).argmax() == 2


def test_cache_tilts_only_rows_with_votes_and_counts_training_only(tmp_path):
    csv, _ = _write_pair(tmp_path)
    train_rows = [0, 1, 2, 3, 4, 5, 6, 7, 8, 11]  # the hand-made file's Training rows
    teacher = tmp_path / "teacher.npz"
    save_teacher(teacher, {"ids": np.array([str(i) for i in train_rows]), "logits": np.zeros((10, 7), np.float16),
                           "classes": np.array(FER2013_CLASSES), "meta": json.dumps({"teachers": ["t"]})})
    out = tmp_path / "tilted.npz"
    assert votes_teacher.main([str(teacher), "--beta", "0.5", "--data", str(csv), "--out", str(out)]) == 0

    logits, has = load_teacher(out, np.array([str(i) for i in train_rows]), FER2013_CLASSES)
    p = {r: np.exp(row) for r, row in zip(train_rows, logits.numpy().astype(np.float64))}
    for r in train_rows:
        assert abs(p[r].sum() - 1) < 1e-2
    # row 11: anger 6, fear 4; the only Training image with either vote is FER2013 "angry"
    assert FER2013_CLASSES[p[11].argmax()] == "angry"
    # not a face, unknown, no image name, contempt: no usable votes, the teacher's (uniform) row is kept
    for r in (3, 4, 5, 6):
        assert np.allclose(p[r], 1 / 7, atol=2e-3)
    meta = json.loads(str(np.load(out)["meta"]))
    assert meta["teachers"] == ["t"] and meta["votes"]["beta"] == 0.5
    # the PrivateTest row (surprise votes, FER2013 "surprise") must not reach the table: in Training, surprise
    # votes only ever fell on FER2013 "neutral" faces
    table = np.array(meta["votes"]["table_fer_plus_to_fer2013"])
    surprise_votes = FER2013_CLASSES.index("surprise")  # the 7-class FER+ columns are in FER2013 order
    assert table[surprise_votes, FER2013_CLASSES.index("surprise")] == 0
    assert table[surprise_votes, FER2013_CLASSES.index("neutral")] == 1


def test_evidence_measures_a_model_with_and_without_votes_and_refuses_privatetest(tmp_path):
    csv, _ = _write_pair(tmp_path)
    fer = load_fer2013_csv(csv)
    res = votes_teacher.evidence(fer, "fast", betas=(0.5,), split="Training")
    assert res["faces"] == 5  # Training rows with usable votes: 0, 1, 2, 8, 11
    for k in ("votes_alone", "model_alone"):
        assert 0 <= res[k] <= 1
    assert set(res["model_tilted"]) == {"0.5"}
    with pytest.raises(SystemExit, match="PrivateTest"):
        votes_teacher.votes_posterior(fer, "PrivateTest")
