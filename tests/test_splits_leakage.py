"""Stratified splits, class subsets, duplicate / blank detection (and the README numbers on the full file)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FER_FULL

from ferlab.data.dataset import SPLITS, FERDataset
from ferlab.data.fer2013 import load_fer2013_csv
from ferlab.data.leakage import duplicates_in, exact_groups, find_leakage, near_pairs, phash
from ferlab.data.splits import resplit, select_classes, stratified_split
from ferlab.errors import FerlabError
from ferlab.labels import FER2013_CLASSES


@pytest.fixture(scope="module")
def sample(fer_sample, tmp_path_factory):
    src = tmp_path_factory.mktemp("sample") / "s.csv"
    src.write_bytes(fer_sample.read_bytes())
    return load_fer2013_csv(src)


def _labels():
    return np.repeat(np.arange(4), [1000, 250, 37, 3])


@pytest.mark.parametrize("ratios", [{"train": 80, "val": 10, "test": 10}, {"a": 0.7, "b": 0.1, "c": 0.2}])
def test_stratified_split_keeps_class_ratios(ratios):
    labels = _labels()
    parts = stratified_split(labels, ratios, seed=3)
    assert parts.shape == labels.shape
    names = list(ratios)
    total = sum(ratios.values())
    for c, n in zip(range(4), [1000, 250, 37, 3]):
        got = [int(np.sum((labels == c) & (parts == p))) for p in names]
        assert sum(got) == n
        for g, p in zip(got, names):
            assert abs(g - n * ratios[p] / total) < 1, (c, p, got)


def test_stratified_split_is_deterministic_and_seeded():
    labels = _labels()
    a = stratified_split(labels, {"train": 0.9, "val": 0.1}, seed=0)
    b = stratified_split(labels, {"train": 0.9, "val": 0.1}, seed=0)
    c = stratified_split(labels, {"train": 0.9, "val": 0.1}, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert (a == "val").sum() == (c == "val").sum() == 100 + 25 + 4 + 0


def test_stratified_split_bad_ratios():
    with pytest.raises(FerlabError):
        stratified_split(_labels(), {"a": -1, "b": 2})
    with pytest.raises(FerlabError):
        stratified_split(_labels(), {})


def test_resplit_uses_standard_names_and_keeps_duplicates_together(sample):
    imgs = sample.images.copy()
    imgs[5] = imgs[400]  # plant a duplicate pair
    ds = FERDataset(images=imgs, labels=sample.labels, split=sample.split, ids=sample.ids, classes=sample.classes)
    for seed in range(5):
        out = resplit(ds, {"train": 70, "val": 10, "test": 20}, seed=seed)
        assert out.split_names() == list(SPLITS)
        assert out.split[5] == out.split[400]
        counts = out.class_counts()
        for cls in FER2013_CLASSES:
            assert 66 <= counts["Training"][cls] <= 74 and 16 <= counts["PrivateTest"][cls] <= 24
    out = resplit(ds, {"fit": 1, "holdout": 1}, seed=0, group_duplicates=False)
    assert out.split_names() == ["fit", "holdout"] and (out.split == "fit").sum() == 350


def test_select_classes_six_without_disgust(sample):
    six = [c for c in FER2013_CLASSES if c != "disgust"]
    out = select_classes(sample, six)
    assert out.classes == tuple(six) and len(out) == 600
    assert out.labels.min() == 0 and out.labels.max() == 5
    # labels follow the images: a happy image stays happy
    k = int(np.flatnonzero(sample.labels == FER2013_CLASSES.index("happy"))[0])
    j = list(out.ids).index(sample.ids[k])
    assert out.classes[out.labels[j]] == "happy"
    # order and spelling of the request are respected
    two = select_classes(sample, ["Happiness", "anger"])
    assert two.classes == ("happy", "angry") and len(two) == 200
    with pytest.raises(FerlabError, match="unknown class"):
        select_classes(sample, ["happy", "bored"])


def test_select_classes_renormalises_soft_targets():
    soft = np.array([[0.5, 0.3, 0.2], [0.0, 0.0, 1.0], [0.6, 0.0, 0.4]], dtype=np.float32)
    ds = FERDataset(images=np.zeros((3, 48, 48), np.uint8), labels=np.array([0, 2, 0]), split=np.array(["Training"] * 3),
                    ids=np.array(["a", "b", "c"]), classes=("x", "y", "z"), soft=soft)
    out = select_classes(ds, ["x", "y"])
    assert list(out.ids) == ["a", "c"]
    np.testing.assert_allclose(out.soft, [[0.625, 0.375], [1.0, 0.0]], rtol=1e-6)


def _leak_fixture(sample):
    """Distinct faces in three splits plus planted exact / near duplicates and blank images."""
    g = exact_groups(sample.images)
    _, first = np.unique(g, return_index=True)
    base = sample.images[np.sort(first)][:90]
    assert len(np.unique(exact_groups(base))) == 90
    h = phash(base)
    assert len(near_pairs(h, 4)) == 0  # the chosen faces are not already near each other
    imgs = list(base)
    split = ["Training"] * 60 + ["PublicTest"] * 15 + ["PrivateTest"] * 15
    rng = np.random.default_rng(0)
    # exact: training images 0 and 1 copied into PrivateTest, image 2 twice into PublicTest
    for src, s in [(0, "PrivateTest"), (1, "PrivateTest"), (2, "PublicTest"), (2, "PublicTest")]:
        imgs.append(base[src].copy())
        split.append(s)
    # near: training image 3 brightened and with a little noise, into PublicTest
    near = np.clip(base[3].astype(int) + 6 + rng.integers(-2, 3, base[3].shape), 0, 255).astype(np.uint8)
    imgs.append(near)
    split.append("PublicTest")
    # an exact duplicate inside Training, and the same image in both test splits
    imgs.append(base[10].copy())
    split.append("Training")
    imgs.append(base[70].copy())  # a PublicTest image, now also in PrivateTest
    split.append("PrivateTest")
    # blank images
    for v in (0, 128):
        imgs.append(np.full((48, 48), v, np.uint8))
        split.append("PrivateTest")
    n = len(imgs)
    return FERDataset(images=np.stack(imgs), labels=np.zeros(n, np.int64), split=np.array(split),
                      ids=np.array([f"r{i}" for i in range(n)]), classes=FER2013_CLASSES)


def test_leakage_finds_planted_duplicates_and_blanks(sample):
    ds = _leak_fixture(sample)
    rep = find_leakage(ds, near_threshold=4)
    tr_pr = rep.exact_across[("Training", "PrivateTest")]
    assert (tr_pr.rows_b, tr_pr.rows_a, tr_pr.images) == (2, 2, 2)
    assert ("r0", "r90") in tr_pr.examples
    tr_pu = rep.exact_across[("Training", "PublicTest")]
    assert (tr_pu.rows_b, tr_pu.rows_a, tr_pu.images) == (2, 1, 1)  # two PublicTest rows, one Training image
    pu_pr = rep.exact_across[("PublicTest", "PrivateTest")]
    assert pu_pr.images == 1 and pu_pr.rows_b == 1
    assert rep.exact_within["Training"].rows == 1 and rep.exact_within["Training"].groups == 1
    assert rep.exact_within["PublicTest"].rows == 1  # image 2's two copies
    near = rep.near_across[("Training", "PublicTest")]
    assert near.rows_b == 1 and ("r3", "r94") in near.examples
    assert rep.near_across[("Training", "PrivateTest")].pairs == 0  # exact copies are not counted as near
    assert rep.blank == {"Training": 0, "PublicTest": 0, "PrivateTest": 2}
    assert set(rep.blank_examples) == {"r97", "r98"}
    text = "\n".join(rep.summary_lines())
    assert "2 PrivateTest rows also appear in Training" in text


def test_duplicates_in_mask(sample):
    ds = _leak_fixture(sample)
    exact = duplicates_in(ds, "Training")
    assert set(ds.ids[exact]) == {"r90", "r91", "r92", "r93"}
    near = duplicates_in(ds, "Training", near_threshold=4)
    assert set(ds.ids[near]) == {"r90", "r91", "r92", "r93", "r94"}


def test_near_pairs_equals_brute_force():
    rng = np.random.default_rng(1)
    h = rng.integers(0, 2**63, 3000, dtype=np.uint64)
    flips = rng.integers(0, 64, (300, 3))
    near = h[:300].copy()
    for k in range(3):
        near ^= np.uint64(1) << flips[:, k].astype(np.uint64)
    h = np.concatenate([h, near])
    for t in (0, 3, 4):
        got = near_pairs(h, t)
        d = np.bitwise_count(h[:, None] ^ h[None, :])
        i, j = np.nonzero(np.triu(d <= t, 1))
        assert np.array_equal(got, np.stack([i, j], 1)), t
    assert len(near_pairs(h, 3)) >= 300


@pytest.mark.slow
def test_full_file_duplicates_match_readme():
    if not FER_FULL.exists():
        pytest.skip(f"{FER_FULL} not present")
    import time

    ds = load_fer2013_csv(FER_FULL)
    t0 = time.perf_counter()
    rep = find_leakage(ds)
    assert time.perf_counter() - t0 < 20
    assert rep.exact_across[("Training", "PrivateTest")].rows_b == 288
    assert rep.exact_across[("Training", "PublicTest")].rows_b == 280
    assert rep.exact_across[("PublicTest", "PrivateTest")].images == 43
    assert rep.blank_total == 12
