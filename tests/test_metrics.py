"""ferlab.evaluation.metrics against scikit-learn on fixed arrays, plus calibration and bootstrap checks."""

from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np
import pytest

from ferlab.calibration import expected_calibration_error, fit_temperature, softmax
from ferlab.evaluation.metrics import (
    average_precision,
    evaluate_predictions,
    precision_recall_curve,
    roc_curve,
    selective_prediction,
)

sk = pytest.importorskip("sklearn.metrics")

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def _fixture(n=600, k=7, seed=3, strength=1.2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += strength
    return y, softmax(logits)


@pytest.fixture(scope="module")
def fixed():
    y, p = _fixture()
    return y, p, evaluate_predictions(y, p, CLASSES, bootstrap=500, seed=0)


def test_accuracy_and_balanced_accuracy(fixed):
    y, p, r = fixed
    pred = p.argmax(1)
    assert r.n == len(y)
    assert r.accuracy == pytest.approx(sk.accuracy_score(y, pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        assert r.balanced_accuracy == pytest.approx(sk.balanced_accuracy_score(y, pred))


def test_precision_recall_f1_per_class_and_averages(fixed):
    y, p, r = fixed
    pred = p.argmax(1)
    labels = list(range(7))
    pr, rc, f1, sup = sk.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(r.precision, pr)
    np.testing.assert_allclose(r.recall, rc)
    np.testing.assert_allclose(r.f1, f1)
    np.testing.assert_array_equal(r.support, sup)
    for avg, got in (("macro", r.macro), ("weighted", r.weighted)):
        pa, ra, fa, _ = sk.precision_recall_fscore_support(y, pred, labels=labels, average=avg, zero_division=0)
        assert got["precision"] == pytest.approx(pa)
        assert got["recall"] == pytest.approx(ra)
        assert got["f1"] == pytest.approx(fa)
    assert r.macro_f1 == pytest.approx(sk.f1_score(y, pred, average="macro"))


def test_confusion_matrix(fixed):
    y, p, r = fixed
    cm = sk.confusion_matrix(y, p.argmax(1), labels=list(range(7)))
    np.testing.assert_array_equal(r.confusion, cm)
    np.testing.assert_allclose(r.confusion_normalized, sk.confusion_matrix(y, p.argmax(1), normalize="true"))
    np.testing.assert_allclose(r.confusion_normalized.sum(1), 1.0)


def test_top_k(fixed):
    y, p, r = fixed
    assert r.top_k[1] == pytest.approx(r.accuracy)
    for k in (2, 3):
        assert r.top_k[k] == pytest.approx(sk.top_k_accuracy_score(y, p, k=k, labels=list(range(7))))
    assert r.top_k[1] <= r.top_k[2] <= r.top_k[3]


def test_roc_auc(fixed):
    y, p, r = fixed
    assert r.auc_macro == pytest.approx(sk.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    onehot = np.eye(7)[y]
    assert r.auc_micro == pytest.approx(sk.roc_auc_score(onehot, p, average="micro"))
    for i in range(7):
        assert r.auc[i] == pytest.approx(sk.roc_auc_score(onehot[:, i], p[:, i]))
        fpr, tpr = r.roc[CLASSES[i]]
        assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
        assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_roc_with_ties_matches_sklearn():
    y = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    s = np.array([0.2, 0.8, 0.5, 0.5, 0.5, 0.1, 0.9, 0.2])
    fpr, tpr = roc_curve(y.astype(bool), s)
    sf, st, _ = sk.roc_curve(y, s)
    np.testing.assert_allclose(fpr, sf)
    np.testing.assert_allclose(tpr, st)


def test_log_loss(fixed):
    y, p, r = fixed
    assert r.nll == pytest.approx(sk.log_loss(y, p, labels=list(range(7))))


def test_ece_hand_computed():
    # 4 samples, 2 classes, 5 bins of width 0.2.  Top-1 confidences 0.9, 0.9 (bin 4), 0.7 (bin 3), 0.55 (bin 2)
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.45, 0.55]])
    y = np.array([0, 0, 0, 1])  # correct, wrong, correct, correct
    # bin 4: conf 0.9, acc 0.5 -> |0.4| * 2/4; bin 3: |1 - 0.7| * 1/4; bin 2: |1 - 0.55| * 1/4
    expected = 0.4 * 0.5 + 0.3 * 0.25 + 0.45 * 0.25
    assert expected_calibration_error(probs, y, bins=5) == pytest.approx(expected)
    r = evaluate_predictions(y, probs, ["a", "b"], bootstrap=0, ece_bins=5)
    assert r.ece == pytest.approx(expected)
    assert r.reliability["count"].tolist() == [0, 0, 1, 1, 2]
    assert r.accuracy_ci is None


def test_temperature_fit_recovers_known_temperature():
    rng = np.random.default_rng(0)
    n, k, t_true = 20000, 5, 2.5
    z = rng.normal(scale=4.0, size=(n, k))
    p = softmax(z, t_true)
    y = (p.cumsum(1) > rng.random(n)[:, None]).argmax(1)  # labels drawn from softmax(z / T)
    assert fit_temperature(z, y) == pytest.approx(t_true, rel=0.05)


def test_bootstrap_ci_contains_accuracy_and_narrows_with_n():
    widths = []
    for n in (200, 800, 3200):
        y, p = _fixture(n=n, seed=n)
        t0 = time.perf_counter()
        r = evaluate_predictions(y, p, CLASSES, bootstrap=1000, seed=0)
        assert time.perf_counter() - t0 < 5  # vectorised
        lo, hi = r.accuracy_ci
        assert lo <= r.accuracy <= hi
        assert set(r.ci) == {"accuracy", "balanced_accuracy", "macro_f1"}
        assert r.ci["balanced_accuracy"][0] <= r.balanced_accuracy <= r.ci["balanced_accuracy"][1]
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # roughly the binomial standard error: width ~ 2 * 1.96 * sqrt(acc (1 - acc) / n)
    se = math.sqrt(r.accuracy * (1 - r.accuracy) / 3200)
    assert widths[2] == pytest.approx(2 * 1.96 * se, rel=0.25)


def test_bootstrap_is_reproducible():
    y, p = _fixture(n=300)
    a = evaluate_predictions(y, p, CLASSES, bootstrap=200, seed=5).accuracy_ci
    b = evaluate_predictions(y, p, CLASSES, bootstrap=200, seed=5).accuracy_ci
    assert a == b


def test_absent_class_is_graceful():
    y, p = _fixture(n=300)
    keep = y != 1  # no "disgust" in the labels; the model may still predict it
    y, p = y[keep], p[keep]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warnings on the way
        r = evaluate_predictions(y, p, CLASSES, bootstrap=100)
    assert math.isnan(r.auc[1]) and math.isnan(r.recall[1]) and math.isnan(r.f1[1])
    assert any("disgust" in n for n in r.notes)
    present = [0, 2, 3, 4, 5, 6]
    pred = p.argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        assert r.balanced_accuracy == pytest.approx(sk.balanced_accuracy_score(y, pred))
    assert r.macro["f1"] == pytest.approx(sk.f1_score(y, pred, labels=present, average="macro", zero_division=0))
    assert r.weighted["f1"] == pytest.approx(sk.f1_score(y, pred, labels=list(range(7)), average="weighted",
                                                         zero_division=0))
    assert r.auc_macro == pytest.approx(np.mean([sk.roc_auc_score(y == c, p[:, c]) for c in present]))
    assert r.auc_micro == pytest.approx(sk.roc_auc_score(np.eye(7)[y], p, average="micro"))
    d = r.to_dict()
    text = json.dumps(d, allow_nan=False)  # NaN became null: valid JSON
    assert d["per_class"]["disgust"]["auc"] is None and d["per_class"]["disgust"]["support"] == 0
    assert "NaN" not in text


def test_to_dict_fields(fixed):
    _, _, r = fixed
    d = r.to_dict()
    for key in ("accuracy", "accuracy_ci95", "top2_accuracy", "top3_accuracy", "balanced_accuracy", "macro_f1",
                "macro", "weighted", "per_class", "confusion_matrix", "confusion_matrix_normalized", "auc", "ece",
                "reliability", "nll", "roc", "clean_accuracy", "clean_n", "pr", "average_precision", "selective",
                "selective_curve"):
        assert key in d
    assert len(d["confusion_matrix"]) == 7 and sum(map(sum, d["confusion_matrix"])) == r.n
    assert len(d["roc"]["fpr"]) == len(d["roc"]["micro"])
    json.dumps(d, allow_nan=False)


def test_bad_inputs():
    y, p = _fixture(n=20)
    with pytest.raises(ValueError):
        evaluate_predictions(y, p[:, :5], CLASSES)
    with pytest.raises(ValueError):
        evaluate_predictions(y[:10], p, CLASSES)
    with pytest.raises(ValueError):
        evaluate_predictions(y + 7, p, CLASSES)


# ----------------------------------------------------------------------------------------------- issue 16 §5

def test_average_precision_and_pr_curve_match_sklearn(fixed):
    y, p, r = fixed
    onehot = np.eye(7)[y]
    for i in range(7):
        assert r.ap[i] == pytest.approx(sk.average_precision_score(onehot[:, i], p[:, i]))
        prec, rec, thr = sk.precision_recall_curve(onehot[:, i], p[:, i])
        got_rec, got_prec, got_thr = precision_recall_curve(onehot[:, i].astype(bool), p[:, i])
        # scikit-learn: lowest threshold first, plus a final (recall 0, precision 1) point
        np.testing.assert_allclose(got_rec, rec[:-1][::-1])
        np.testing.assert_allclose(got_prec, prec[:-1][::-1])
        np.testing.assert_allclose(got_thr, thr[::-1])
    assert r.ap_micro == pytest.approx(sk.average_precision_score(onehot, p, average="micro"))
    assert r.ap_macro == pytest.approx(sk.average_precision_score(onehot, p, average="macro"))


def test_average_precision_with_ties_and_a_rare_class():
    y = np.array([0, 1, 1, 0, 1, 0, 1, 1, 0, 0], bool)
    s = np.array([0.2, 0.8, 0.5, 0.5, 0.5, 0.1, 0.9, 0.2, 0.5, 0.3])
    assert average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s))
    # a class with 55 of 3,000 rows (disgust on FER2013 PrivateTest): AP is defined and matches
    rng = np.random.default_rng(0)
    y = np.zeros(3000, bool)
    y[rng.choice(3000, 55, replace=False)] = True
    s = rng.random(3000) + 0.4 * y
    assert average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s))
    assert math.isnan(average_precision(np.zeros(5, bool), np.arange(5.0)))


def _brute_selective(y, p, t):
    keep = p.max(1) >= t
    return keep.mean(), (p.argmax(1)[keep] == y[keep]).mean(), keep.sum()


def test_selective_prediction_against_brute_force():
    y, p = _fixture(n=500, seed=11, strength=2.0)
    p = np.round(p, 2)  # many tied confidences: ties are kept or dropped together
    p = p / p.sum(1, keepdims=True)
    sel = selective_prediction(y, p, targets=(0.8, 0.9, 0.95), min_kept=20)
    conf = p.max(1)
    assert np.all(np.diff(sel["coverage"]) > 0) and sel["coverage"][-1] == 1
    assert sel["accuracy"][-1] == pytest.approx((p.argmax(1) == y).mean())
    for cov, acc, thr, kept in zip(sel["coverage"], sel["accuracy"], sel["threshold"], sel["kept"]):
        bc, ba, bk = _brute_selective(y, p, thr)
        assert (cov, kept) == (pytest.approx(bc), bk) and acc == pytest.approx(ba)
    distinct = np.unique(conf)
    for target, hit in sel["targets"].items():
        ok = [t for t in distinct if _brute_selective(y, p, t)[1] >= target and _brute_selective(y, p, t)[2] >= 20]
        if not ok:
            assert hit is None
            continue
        assert hit["threshold"] == pytest.approx(min(ok))  # the lowest threshold: the largest coverage
        bc, ba, bk = _brute_selective(y, p, hit["threshold"])
        assert hit["accuracy"] >= target and hit["accuracy"] == pytest.approx(ba) and hit["kept"] == bk
        assert hit["accuracy_lower95"] < hit["accuracy"]
    assert sel["targets"][0.8] is not None
    # the area is the mean, over rows added most confident first, of the accuracy of the set they join
    order = np.argsort(-conf, kind="stable")
    right = (p.argmax(1) == y)[order]
    per_row = np.array([_brute_selective(y, p, conf[i])[1] for i in order])
    assert sel["area"] == pytest.approx(per_row.mean())
    assert sel["area"] >= sel["accuracy"][-1]  # confidence carries signal in this fixture
    assert right[:50].mean() > right.mean()


def test_selective_target_not_reached_and_min_kept():
    y, p = _fixture(n=400, seed=2, strength=0.2)  # a poor model: 95% is out of reach
    sel = selective_prediction(y, p)
    assert sel["targets"][0.95] is None
    # two very confident right answers reach 100% on 2 rows, which does not count below min_kept
    y2, p2 = y.copy(), p.copy()
    p2[:2] = 0.0
    p2[0, y2[0]] = p2[1, y2[1]] = 1.0
    assert selective_prediction(y2, p2, min_kept=30)["targets"][0.95] is None
    hit = selective_prediction(y2, p2, min_kept=1)["targets"][0.95]
    assert hit["kept"] == 2 and hit["threshold"] == 1.0 and hit["accuracy"] == 1.0
    r = evaluate_predictions(y, p, CLASSES, bootstrap=0)
    d = r.to_dict()
    assert d["selective"]["thresholds"]["accuracy_95"] == "not reached"
    json.dumps(d, allow_nan=False)


def test_selective_perfect_and_tied_confidences():
    y = np.array([0, 1, 0, 1])
    p = np.array([[0.6, 0.4], [0.4, 0.6], [0.6, 0.4], [0.6, 0.4]])  # one confidence for every row
    sel = selective_prediction(y, p, min_kept=1)
    assert sel["coverage"].tolist() == [1.0] and sel["accuracy"].tolist() == [0.75]
    assert sel["targets"][0.9] is None and sel["at_coverage"][0.1]["kept"] == 4


def test_per_class_bootstrap_intervals(fixed):
    y, p, r = fixed
    for m, point in (("recall", r.recall), ("f1", r.f1)):
        ci = r.class_ci[m]
        assert ci.shape == (7, 2)
        assert np.all(ci[:, 0] <= point) and np.all(point <= ci[:, 1])
        assert np.all(ci[:, 1] - ci[:, 0] > 0.02)
    # the recall interval of a class is close to the binomial one of its support
    i = int(np.argmax(r.support))
    se = math.sqrt(r.recall[i] * (1 - r.recall[i]) / r.support[i])
    assert r.class_ci["recall"][i, 1] - r.class_ci["recall"][i, 0] == pytest.approx(2 * 1.96 * se, rel=0.3)
    again = evaluate_predictions(y, p, CLASSES, bootstrap=500, seed=0)
    np.testing.assert_array_equal(again.class_ci["f1"], r.class_ci["f1"])  # fixed seed: reproducible
    d = r.to_dict()["per_class"]["angry"]
    assert d["recall_ci95"] == pytest.approx(list(r.class_ci["recall"][0]))
    assert d["average_precision"] == pytest.approx(r.ap[0])


def test_rare_class_gets_a_wider_interval():
    rng = np.random.default_rng(7)
    n = 3000
    y = rng.choice(7, n, p=[0.14, 55 / 3000, 0.14, 0.25, 0.17, 0.11, 1 - 0.14 * 2 - 55 / 3000 - 0.25 - 0.17 - 0.11])
    logits = rng.normal(size=(n, 7))
    logits[np.arange(n), y] += 1.5
    r = evaluate_predictions(y, softmax(logits), CLASSES, bootstrap=1000, seed=0)
    width = r.class_ci["recall"][:, 1] - r.class_ci["recall"][:, 0]
    assert width[1] == width.max() and width[1] > 2 * width[3]


def test_absent_class_new_metrics_are_null_without_warnings():
    y, p = _fixture(n=300)
    keep = y != 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = evaluate_predictions(y[keep], p[keep], CLASSES, bootstrap=100)
    assert math.isnan(r.ap[1]) and np.isnan(r.class_ci["recall"][1]).all()
    d = r.to_dict()
    assert d["per_class"]["disgust"]["average_precision"] is None
    assert d["per_class"]["disgust"]["recall_ci95"] is None and d["per_class"]["disgust"]["f1_ci95"] is None
    assert d["pr"]["disgust"] is None and len(d["pr"]["angry"]) == len(d["pr"]["recall"])
    assert r.ap_macro == pytest.approx(np.mean([r.ap[i] for i in range(7) if i != 1]))
