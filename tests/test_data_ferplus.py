"""FER+ label modes on hand-made vote rows, votes-file validation, and the README table on the real files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FER_FULL, FERPLUS_VOTES

from ferlab.cli import main
from ferlab.data import load_dataset
from ferlab.data.fer2013 import load_fer2013_csv
from ferlab.data.ferplus import apply_ferplus_labels, process_votes
from ferlab.errors import DataError
from ferlab.labels import FER2013_CLASSES, FERPLUS_CLASSES

HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
#        usage, name,   neu hap sur sad ang dis fea con unk NF
ROWS = [
    ("Training", "a.png", [8, 2, 0, 0, 0, 0, 0, 0, 0, 0]),     # 0 clear neutral
    ("Training", "b.png", [5, 1, 1, 1, 1, 1, 0, 0, 0, 0]),     # 1 single votes are outliers -> neutral 5/5
    ("Training", "c.png", [4, 3, 3, 0, 0, 0, 0, 0, 0, 0]),     # 2 no majority; probability 4/3/3
    ("Training", "d.png", [2, 0, 0, 0, 0, 0, 0, 0, 0, 8]),     # 3 not a face
    ("Training", "e.png", [4, 0, 0, 0, 0, 0, 0, 0, 6, 0]),     # 4 unknown
    ("Training", "", [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),         # 5 no image name
    ("Training", "g.png", [3, 0, 0, 0, 0, 0, 0, 7, 0, 0]),     # 6 contempt
    ("Training", "h.png", [3, 3, 2, 2, 0, 0, 0, 0, 0, 0]),     # 7 four emotions needed -> unknown; multi: 3+3
    ("Training", "i.png", [5, 3, 2, 0, 0, 0, 0, 0, 0, 0]),     # 8 5 = half, no majority; prob 5/8, 3/8
    ("PublicTest", "j.png", [4, 3, 3, 0, 0, 0, 0, 0, 0, 0]),   # 9 like 2, but test: majority rule -> dropped
    ("PrivateTest", "k.png", [0, 0, 9, 1, 0, 0, 0, 0, 0, 0]),  # 10 surprise
    ("Training", "l.png", [0, 0, 0, 0, 6, 0, 4, 0, 0, 0]),     # 11 anger
]
FER_EMOTION = [6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 5, 0]


def _write_pair(folder, rows=ROWS, votes_name="fer2013new.csv", votes_dir=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["emotion,pixels,Usage"]
    for (usage, _, _), e in zip(rows, FER_EMOTION):
        px = " ".join(map(str, rng.integers(0, 256, 48 * 48)))
        lines.append(f"{e},{px},{usage}")
    csv = folder / "fer2013.csv"
    csv.write_text("\n".join(lines) + "\n")
    vdir = votes_dir or folder
    vdir.mkdir(parents=True, exist_ok=True)
    votes = vdir / votes_name
    votes.write_text(HEADER + "\n" + "\n".join(f"{u},{n}," + ",".join(map(str, v)) for u, n, v in rows) + "\n")
    return csv, votes


def _by_row(ds):
    return {int(i): (ds.classes[lab], soft) for i, lab, soft in zip(ds.ids, ds.labels, ds.soft)}


def test_majority_mode(tmp_path):
    csv, votes = _write_pair(tmp_path)
    ds = apply_ferplus_labels(load_fer2013_csv(csv), votes, mode="majority")
    rows = _by_row(ds)
    assert sorted(rows) == [0, 1, 6, 10, 11]
    assert rows[0][0] == "neutral" and rows[1][0] == "neutral"
    assert rows[6][0] == "contempt" and rows[10][0] == "surprise" and rows[11][0] == "anger"
    assert ds.classes == FERPLUS_CLASSES
    assert np.array_equal(ds.soft, np.eye(8, dtype=np.float32)[ds.labels])  # one-hot targets
    assert dict(zip(ds.ids, ds.split))["10"] == "PrivateTest"


def test_probability_and_crossentropy_modes(tmp_path):
    csv, votes = _write_pair(tmp_path)
    base = load_fer2013_csv(csv)
    for mode in ("probability", "crossentropy"):
        ds = apply_ferplus_labels(base, votes, mode=mode)
        rows = _by_row(ds)
        assert sorted(rows) == [0, 1, 2, 6, 8, 10, 11], mode  # 2 and 8 kept for training, 9 (test) not
        np.testing.assert_allclose(rows[2][1][:3], [0.4, 0.3, 0.3], rtol=1e-6)
        np.testing.assert_allclose(rows[8][1][:2], [5 / 8, 3 / 8], rtol=1e-6)
        np.testing.assert_allclose(rows[0][1][:2], [1.0, 0.0])  # 8 of 10 votes already cover 75%: 2 left out
        np.testing.assert_allclose(rows[10][1], np.eye(8)[2])  # test rows: majority one-hot
        assert rows[2][0] == "neutral"  # no majority: hard label = argmax of the target
        np.testing.assert_allclose(ds.soft.sum(1), 1, rtol=1e-6)


def test_multitarget_mode(tmp_path):
    csv, votes = _write_pair(tmp_path)
    ds = apply_ferplus_labels(load_fer2013_csv(csv), votes, mode="multitarget")
    rows = _by_row(ds)
    assert sorted(rows) == [0, 1, 2, 6, 7, 8, 10, 11]
    np.testing.assert_allclose(rows[7][1][:4], [0.5, 0.5, 0, 0])  # 3 and 3 are >= 30%, 2 and 2 are not
    np.testing.assert_allclose(rows[2][1][:3], [0.4, 0.3, 0.3], rtol=1e-6)
    np.testing.assert_allclose(rows[8][1][:3], [5 / 8, 3 / 8, 0], rtol=1e-6)


def test_process_votes_reference_rules():
    v = np.array([r[2] for r in ROWS])
    maj = process_votes(v, "majority")
    assert maj.argmax(1).tolist() == [0, 0, 8, 9, 8, 0, 7, 8, 8, 8, 2, 4]
    prob = process_votes(v, "probability")
    assert prob.argmax(1).tolist() == [0, 0, 0, 9, 8, 0, 7, 8, 0, 0, 2, 4]
    # the vectorised majority equals the per-row reference implementation
    from ferlab.data.ferplus import _process

    for row in v:
        np.testing.assert_allclose(_process(row, "majority"), process_votes(row[None], "majority")[0])


def test_seven_classes_drop_contempt(tmp_path):
    csv, votes = _write_pair(tmp_path)
    ds = apply_ferplus_labels(load_fer2013_csv(csv), votes, mode="majority", classes=7)
    assert ds.classes == FER2013_CLASSES
    rows = _by_row(ds)
    assert sorted(rows) == [0, 1, 10, 11]
    assert rows[11][0] == "angry" and rows[10][0] == "surprise" and rows[0][0] == "neutral"
    ds = apply_ferplus_labels(load_fer2013_csv(csv), votes, mode="probability", classes=7)
    np.testing.assert_allclose(_by_row(ds)[2][1][[6, 3, 5]], [0.4, 0.3, 0.3], rtol=1e-6)


def test_votes_file_is_found_beside_or_in_ferplus_folder(tmp_path):
    csv, _ = _write_pair(tmp_path / "a")
    assert len(apply_ferplus_labels(load_fer2013_csv(csv))) == 5
    csv, _ = _write_pair(tmp_path / "b" / "fer2013", votes_dir=tmp_path / "b" / "ferplus")
    assert len(load_dataset(csv, labels="ferplus-majority")) == 5
    assert load_dataset(csv, labels="ferplus7-majority").classes == FER2013_CLASSES
    csv, _ = _write_pair(tmp_path / "c", votes_name="other.csv")
    with pytest.raises(DataError, match="fer2013new.csv"):
        apply_ferplus_labels(load_fer2013_csv(csv))


def _broken_votes(tmp_path, edit):
    csv, votes = _write_pair(tmp_path)
    lines = votes.read_text().splitlines()
    edit(lines)
    votes.write_text("\n".join(lines) + "\n")
    return csv, votes


@pytest.mark.parametrize("edit, message", [
    (lambda ls: ls.__setitem__(0, ls[0].replace(",NF", "")), ":1: missing column(s) NF"),
    (lambda ls: ls.__setitem__(3, ls[3].replace(",4,3,3,", ",4,x,3,")), ":4: vote count 'x'"),
    (lambda ls: ls.__setitem__(3, ls[3].replace(",4,3,3,", ",4,2.5,3,")), ":4: vote count '2.5'"),
    (lambda ls: ls.__setitem__(5, ls[5] + ",1"), ":6: 13 fields, expected 12"),
    (lambda ls: ls.__setitem__(2, ls[2].replace("Training", "Train")), ":3: unknown Usage"),
    (lambda ls: ls.pop(), "11 vote rows"),
])
def test_bad_votes_file_is_a_one_line_error(tmp_path, capsys, edit, message):
    csv, votes = _broken_votes(tmp_path, edit)
    with pytest.raises(DataError) as info:
        apply_ferplus_labels(load_fer2013_csv(csv), votes)
    assert str(votes) in str(info.value) and message in str(info.value)
    rc = main(["data", "info", str(csv), "--labels", "ferplus-majority", "--votes", str(votes)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err


def test_unknown_mode_and_non_csv_dataset(tmp_path):
    csv, votes = _write_pair(tmp_path)
    with pytest.raises(DataError, match="unknown FER\\+ label mode"):
        apply_ferplus_labels(load_fer2013_csv(csv), votes, mode="plurality")


def test_sample_csv_does_not_align_with_the_real_votes(fer_sample, tmp_path):
    if not FERPLUS_VOTES.exists():
        pytest.skip("no FER+ votes file")
    src = tmp_path / "s.csv"
    src.write_bytes(fer_sample.read_bytes())
    with pytest.raises(DataError, match="35887 vote rows.*700 image rows"):
        apply_ferplus_labels(load_fer2013_csv(src), FERPLUS_VOTES)


def test_cli_info_with_ferplus_labels(tmp_path, capsys):
    csv, votes = _write_pair(tmp_path)
    assert main(["data", "info", str(csv), "--labels", "ferplus-probability"]) == 0
    out = capsys.readouterr().out
    assert "neutral" in out and "contempt" in out and "soft targets" in out
    total = [ln.split() for ln in out.splitlines() if ln.startswith("total")][0]
    assert total[1] == "7"


# README table (majority labels, 8 classes)
README_MAJORITY = {
    "Training": [8740, 7287, 3149, 3014, 2100, 119, 532, 119],
    "PublicTest": [1182, 865, 415, 351, 287, 24, 62, 13],
    "PrivateTest": [1090, 893, 396, 384, 273, 18, 83, 16],
}


@pytest.mark.slow
def test_full_majority_table_matches_readme():
    if not (FER_FULL.exists() and FERPLUS_VOTES.exists()):
        pytest.skip("full FER2013 / FER+ files not present")
    ds = load_dataset(FER_FULL, labels="ferplus-majority", votes=FERPLUS_VOTES)
    table = ds.class_counts()
    assert ds.classes == FERPLUS_CLASSES
    for split, counts in README_MAJORITY.items():
        assert [table[split][c] for c in FERPLUS_CLASSES] == counts, split
    assert [sum(table[s].values()) for s in README_MAJORITY] == [25060, 3199, 3153]
    # the soft modes keep more Training images but the same test images
    prob = load_dataset(FER_FULL, labels="ferplus-crossentropy", votes=FERPLUS_VOTES)
    pt = prob.class_counts()
    assert sum(pt["PublicTest"].values()) == 3199 and sum(pt["PrivateTest"].values()) == 3153
    assert sum(pt["Training"].values()) > 25060
