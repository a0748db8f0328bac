"""Class balancing (ferlab.data.balance): counts, image format, determinism, SMOTE geometry, the leak guard."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ferlab.data.balance import SMOTE_K, balance_dataset, sample_weights, weighted_indices
from ferlab.data.dataset import FERDataset
from ferlab.errors import FerlabError
from ferlab.labels import FER2013_CLASSES

COUNTS = [12, 4, 8, 20, 10, 6, 15]  # angry disgust fear happy sad surprise neutral


def make_ds(counts=COUNTS, seed=0, splits=None, soft=False) -> FERDataset:
    """Random 48x48 uint8 images whose brightness depends a little on the class (classes overlap, so there are
    Tomek links and ENN has something to edit)."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)]).astype(np.int64)
    base = (labels * 6 + 100)[:, None, None]
    images = np.clip(base + rng.integers(-40, 41, (len(labels), 48, 48)), 0, 255).astype(np.uint8)
    split = np.asarray(splits if splits is not None else ["Training"] * len(labels))
    s = None
    if soft:
        s = rng.random((len(labels), 7)).astype(np.float32)
        s[np.arange(len(labels)), labels] += 3
        s /= s.sum(1, keepdims=True)
    return FERDataset(images=images, labels=labels, split=split, ids=np.arange(len(labels)).astype(str),
                      classes=FER2013_CLASSES, soft=s, source="synthetic")


def counts_of(ds):
    return np.bincount(ds.labels, minlength=7).tolist()


def check_format(ds):
    assert ds.images.dtype == np.uint8 and ds.images.shape[1:] == (48, 48)
    assert len(ds.labels) == len(ds.split) == len(ds.ids) == len(ds.images)
    assert set(ds.split.tolist()) == {"Training"}


def test_ros_copies_up_to_the_largest_class():
    ds = make_ds()
    out, bc = balance_dataset(ds, "ros", seed=0, return_counts=True, log=False)
    check_format(out)
    assert counts_of(out) == [20] * 7
    assert bc.before["disgust"] == 4 and bc.after["disgust"] == 20
    n = len(ds)
    assert np.array_equal(out.images[:n], ds.images) and list(out.ids[:n]) == list(ds.ids)  # originals kept
    by_id = {i: k for k, i in enumerate(ds.ids)}
    for img, lab, sid in zip(out.images[n:], out.labels[n:], out.ids[n:]):
        assert sid.startswith("ros:")
        src = by_id[sid.split(":", 2)[2]]  # the copy names its source
        assert np.array_equal(img, ds.images[src]) and lab == ds.labels[src]


def test_rus_drops_down_to_the_smallest_class():
    ds = make_ds()
    out = balance_dataset(ds, "rus", seed=0, log=False)
    check_format(out)
    assert counts_of(out) == [4] * 7
    assert set(out.ids) <= set(ds.ids)
    assert counts_of(balance_dataset(ds, "rus", counts={"happy": 10}, log=False)) == [12, 4, 8, 10, 10, 6, 15]


@pytest.mark.parametrize("method", ["smote", "smote_tomek", "smote_enn"])
def test_smote_family(method):
    ds = make_ds()
    out = balance_dataset(ds, method, seed=0, log=False)
    check_format(out)
    c = counts_of(out)
    if method == "smote":
        assert c == [20] * 7
    else:  # cleaning after SMOTE only removes
        assert all(x <= 20 for x in c)
        # in a space where the classes overlap (2-d features) the cleaning step does remove samples
        feats = np.random.default_rng(0).normal(size=(len(ds), 2)) + ds.labels[:, None] * 0.3
        cleaned = balance_dataset(ds, method, seed=0, features=feats, log=False)
        check_format(cleaned)
        assert all(x <= 20 for x in counts_of(cleaned)) and len(cleaned) < 140
    synth = np.char.startswith(out.ids.astype(str), "smote:")
    assert synth.sum() > 0
    # synthetic images are new images (not copies of an original)
    orig = {im.tobytes() for im in ds.images}
    assert not any(im.tobytes() in orig for im in out.images[synth])


def test_tomek_only_removes_originals():
    ds = make_ds()
    out = balance_dataset(ds, "tomek", log=False)
    check_format(out)
    assert all(a <= b for a, b in zip(counts_of(out), COUNTS))
    assert set(out.ids) <= set(ds.ids)
    feats = np.random.default_rng(0).normal(size=(len(ds), 2)) + ds.labels[:, None] * 0.3
    out = balance_dataset(ds, "tomek", features=feats, log=False)
    assert len(out) < len(ds) and set(out.ids) <= set(ds.ids)
    # what is left has no Tomek link any more among the removed pairs: each removed sample's nearest neighbour
    # was of another class
    gone = np.flatnonzero(~np.isin(ds.ids, out.ids))
    for i in gone:
        d = np.linalg.norm(feats - feats[i], axis=1)
        d[i] = np.inf
        assert ds.labels[np.argmin(d)] != ds.labels[i]


def _pair_for(img, members_pix):
    """(i, j, lam) with img == round(p_i + lam (p_j - p_i)) within rounding, over pairs of one class, or None."""
    s = img.astype(np.float64).ravel()
    for a in range(len(members_pix)):
        for b in range(a + 1, len(members_pix)):
            pa, d = members_pix[a], members_pix[b] - members_pix[a]
            lam = float((s - pa) @ d / (d @ d))  # least squares on the rounded image: off by ~1e-4
            if -1e-3 <= lam <= 1 + 1e-3 and np.abs(s - (pa + lam * d)).max() <= 0.55:
                return a, b, lam
    return None


@pytest.mark.parametrize("space", ["pixels", "features"])
def test_smote_interpolates_between_same_class_neighbours(space):
    """Each synthetic image is an interpolation of two images of its class, and its partner is one of the k nearest
    neighbours in the search space (features when given: the pixels only ride along)."""
    ds = make_ds(counts=[20, 14, 20, 20, 20, 20, 20])
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(len(ds), 6)).astype(np.float32) if space == "features" else None
    out = balance_dataset(ds, "smote", seed=3, features=feats, log=False)
    space_x = feats if feats is not None else ds.images.reshape(len(ds), -1).astype(np.float64)
    members = np.flatnonzero(ds.labels == 1)
    pix = ds.images[members].reshape(len(members), -1).astype(np.float64)
    synth = np.flatnonzero((out.labels == 1) & np.char.startswith(out.ids.astype(str), "smote:"))
    assert len(synth) == 6

    def knn(i):
        d = np.linalg.norm(space_x[members] - space_x[members[i]], axis=1)
        d[i] = np.inf
        return set(np.argsort(d)[:SMOTE_K].tolist())

    for k in synth:
        found = _pair_for(out.images[k], pix)
        assert found is not None, "synthetic image is not between two same-class images"
        a, b, _ = found
        assert b in knn(a) or a in knn(b), "the partner is not a nearest neighbour in the search space"


def test_targeted_counts_reached_exactly_and_max():
    ds = make_ds()
    out, bc = balance_dataset(ds, "targeted", counts={"disgust": 15, "surprise": "+3", "happiness": 25}, seed=0,
                              return_counts=True, log=False)
    check_format(out)
    assert counts_of(out) == [12, 15, 8, 25, 10, 9, 15]
    assert bc.after == dict(zip(FER2013_CLASSES, [12, 15, 8, 25, 10, 9, 15]))
    new = out.subset(np.char.startswith(out.ids.astype(str), "aug:"))
    assert len(new) == 11 + 3 + 5
    by_id = {i: k for k, i in enumerate(ds.ids)}
    for img, lab, sid in zip(new.images, new.labels, new.ids):
        src = by_id[sid.split(":", 2)[2]]
        assert lab == ds.labels[src]
        assert not np.array_equal(img, ds.images[src])  # an augmented copy, not a duplicate
    # each source image is used as evenly as possible: disgust has 4 images for 11 copies -> 2 or 3 each
    srcs = [s.split(":", 2)[2] for s, lab in zip(new.ids, new.labels) if lab == 1]
    assert sorted(np.unique(srcs, return_counts=True)[1].tolist()) == [2, 3, 3, 3]
    mx = balance_dataset(ds, "max", seed=0, log=False)
    check_format(mx)
    assert counts_of(mx) == [20] * 7


@pytest.mark.parametrize("method", ["ros", "rus", "smote", "smote_tomek", "targeted", "max"])
def test_deterministic_for_a_seed(method):
    ds = make_ds()
    counts = {"disgust": 12} if method == "targeted" else None
    a = balance_dataset(ds, method, counts=counts, seed=5, log=False)
    b = balance_dataset(ds, method, counts=counts, seed=5, log=False)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert list(a.ids) == list(b.ids)
    c = balance_dataset(ds, method, counts=counts, seed=6, log=False)
    assert not (np.array_equal(a.images, c.images) and list(a.ids) == list(c.ids))


def test_leak_guard_refuses_evaluation_rows():
    n = sum(COUNTS)
    splits = ["Training"] * (n - 6) + ["PublicTest"] * 3 + ["PrivateTest"] * 3
    ds = make_ds(splits=splits)
    for method in ("ros", "smote", "targeted", "tomek"):
        with pytest.raises(FerlabError) as e:
            balance_dataset(ds, method, counts={"disgust": 10} if method == "targeted" else None, log=False)
        msg = str(e.value)
        assert "PublicTest" in msg and "PrivateTest" in msg and "test images into training" in msg
        assert "Split first" in msg
    out = balance_dataset(ds, "ros", allow_eval=True, log=False)  # the leakage experiment may
    assert len(out) > len(ds)
    assert balance_dataset(ds, "none") is ds  # nothing is resampled
    val = make_ds(splits=["val"] * n)
    with pytest.raises(FerlabError, match="val"):
        balance_dataset(val, "ros", log=False)


def test_bad_arguments():
    ds = make_ds()
    with pytest.raises(FerlabError, match="unknown balance method"):
        balance_dataset(ds, "oversample")
    with pytest.raises(FerlabError, match="needs per-class counts"):
        balance_dataset(ds, "targeted")
    with pytest.raises(FerlabError, match="unknown class"):
        balance_dataset(ds, "ros", counts={"contempt": 30})
    with pytest.raises(FerlabError, match="integer"):
        balance_dataset(ds, "ros", counts={"angry": "lots"})
    with pytest.raises(FerlabError, match="do not apply"):
        balance_dataset(ds, "max", counts={"angry": 30})


def test_soft_targets_travel_with_samples():
    ds = make_ds(soft=True)
    ros = balance_dataset(ds, "ros", seed=0, log=False)
    n = len(ds)
    by_id = {i: k for k, i in enumerate(ds.ids)}
    for k in range(n, len(ros)):
        assert np.array_equal(ros.soft[k], ds.soft[by_id[ros.ids[k].split(":", 2)[2]]])
    sm = balance_dataset(ds, "smote", seed=0, log=False)
    assert sm.soft.shape == (len(sm), 7)
    np.testing.assert_allclose(sm.soft.sum(1), 1, atol=1e-5)
    # interpolated soft targets keep their class on top (both parents have it on top)
    assert (sm.soft[n:].argmax(1) == sm.labels[n:]).all()


def test_counts_are_logged(capsys):
    balance_dataset(make_ds(), "ros", seed=0)
    line = capsys.readouterr().out
    assert "balance ros: 75 -> 140 samples" in line and "disgust 4->20" in line


def test_sample_weights():
    labels = np.array([0, 0, 0, 1, -1])
    w = sample_weights(labels, 2)
    np.testing.assert_allclose(w, [1 / 6, 1 / 6, 1 / 6, 1 / 2, 0])
    idx = weighted_indices(np.array([0] * 90 + [1] * 10), 2, n=4000, seed=0)
    assert 0.4 < (idx >= 90).mean() < 0.6


def test_train_cli_with_ros_on_the_sample(fer_sample, tmp_path, capsys):
    from ferlab.cli import main

    run = tmp_path / "run"
    rc = main(["train", "model=fernet_fast", f"data={fer_sample}", "epochs=1", "max_train_batches=2", "batch_size=16",
               "amp=none", "threads=1", "balance=ros", "classes=[angry, disgust, happy]", "--out", str(run),
               "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "balance ros: 240 -> 240 samples" in out
    rc = main(["train", "model=fernet_fast", f"data={fer_sample}", "epochs=1", "max_train_batches=2", "batch_size=16",
               "amp=none", "threads=1", "balance=targeted", "balance_counts={disgust: 100, happy: '+5'}",
               "--out", str(tmp_path / "run2"), "--no-progress"])
    assert rc == 0
    summary = json.loads((tmp_path / "run2" / "summary.json").read_text())
    assert summary["train_samples"] == 560 + 20 + 5
    # the leak guard holds inside the trainer too: balancing a test split is refused with one line, exit 2
    capsys.readouterr()
    rc = main(["train", "model=fernet_fast", f"data={fer_sample}", "epochs=1", "train_split=PublicTest",
               "val_split=Training", "balance=ros", "--out", str(tmp_path / "run3"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "balance ros refused" in err and "70 PublicTest" in err and len(err.strip().splitlines()) == 1


def test_input_is_never_changed():
    ds = make_ds(counts=[5] * 7)
    before = (ds.images.copy(), ds.labels.copy(), list(ds.ids), list(ds.warnings))
    for method, counts in (("ros", None), ("targeted", {"angry": 5}), ("smote", None), ("rus", None)):
        out = balance_dataset(ds, method, counts=counts, log=False)
        assert out is not ds and len(out) == len(ds)
    assert np.array_equal(ds.images, before[0]) and np.array_equal(ds.labels, before[1])
    assert list(ds.ids) == before[2] and ds.warnings == before[3]
