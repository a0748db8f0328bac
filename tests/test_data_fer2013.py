"""The fer2013 CSV loader: the sample, the cache, gzip input, every bad-input case via the CLI, the full file."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
from conftest import FER_FULL

from ferlab.cli import main
from ferlab.data import cache as cache_mod
from ferlab.data import fer2013 as fer_mod
from ferlab.data import load_dataset
from ferlab.data.fer2013 import load_fer2013_csv
from ferlab.errors import DataError
from ferlab.labels import FER2013_CLASSES


@pytest.fixture()
def sample_copy(fer_sample, tmp_path):
    """The 700-row sample copied to a temporary folder (its cache then stays there too)."""
    dst = tmp_path / "fer2013_sample.csv"
    shutil.copy(fer_sample, dst)
    return dst


def test_sample_counts(sample_copy):
    ds = load_fer2013_csv(sample_copy)
    assert len(ds) == 700
    assert ds.images.shape == (700, 48, 48) and ds.images.dtype == np.uint8
    assert ds.classes == FER2013_CLASSES
    assert ds.split_names() == ["Training", "PublicTest", "PrivateTest"]
    table = ds.class_counts()
    for cls in FER2013_CLASSES:
        assert table["Training"][cls] == 80
        assert table["PublicTest"][cls] == 10
        assert table["PrivateTest"][cls] == 10
    assert ds.ids[0] == "0" and ds.ids[-1] == "699"
    assert not ds.warnings


def test_cache_is_written_and_used(sample_copy, monkeypatch):
    first = load_fer2013_csv(sample_copy)
    cache = cache_mod.cache_path_for(sample_copy, "fer2013")
    assert cache.exists()

    def no_parse(path):
        raise AssertionError("the CSV was parsed again instead of read from the cache")

    monkeypatch.setattr(fer_mod, "_open_text", no_parse)
    second = load_fer2013_csv(sample_copy)
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.labels, second.labels)
    assert np.array_equal(first.split, second.split)


def test_cache_goes_to_ferlab_cache_when_folder_is_read_only(sample_copy, monkeypatch, tmp_path):
    target = tmp_path / "cachedir"
    monkeypatch.setenv("FERLAB_CACHE", str(target))
    monkeypatch.setattr(cache_mod.os, "access", lambda path, mode: False)
    load_fer2013_csv(sample_copy)
    written = list(target.glob("fer2013_sample.csv.fer2013.*.npz"))
    assert len(written) == 1
    assert not list(sample_copy.parent.glob("*.npz"))


def test_gzip_input_equals_plain(sample_copy, tmp_path):
    gz = tmp_path / "sample.csv.gz"
    gz.write_bytes(gzip.compress(sample_copy.read_bytes()))
    a, b = load_fer2013_csv(sample_copy), load_fer2013_csv(gz)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.split, b.split)


# ---------------------------------------------------------------- bad input

def _rows(fer_sample, n=6):
    lines = fer_sample.read_text().splitlines()
    return lines[0], lines[1:1 + n]


def _bad(kind, fer_sample):
    """(file text, 1-based line number of the bad row or None) for each bad-input case."""
    header, rows = _rows(fer_sample)
    e, px, u = rows[2].split(",")
    pxs = px.split()
    if kind == "wrong_pixel_count":
        rows[2] = f"{e},{' '.join(pxs[:-1])},{u}"
    elif kind == "non_integer_pixel":
        rows[2] = f"{e},{' '.join(pxs[:10] + ['1.5x'] + pxs[11:])},{u}"
    elif kind == "out_of_range_pixel":
        rows[2] = f"{e},{' '.join(pxs[:10] + ['256'] + pxs[11:])},{u}"
    elif kind == "unknown_label":
        rows[2] = f"7,{px},{u}"
    elif kind == "unknown_usage":
        rows[2] = f"{e},{px},Validation"
    elif kind == "missing_column":
        return "emotion,Usage\n" + "\n".join(f"{r.split(',')[0]},{r.split(',')[2]}" for r in rows) + "\n", 1
    elif kind == "empty_file":
        return "", None
    else:
        raise ValueError(kind)
    return header + "\n" + "\n".join(rows) + "\n", 4


ROW_CASES = ["wrong_pixel_count", "non_integer_pixel", "out_of_range_pixel", "unknown_label", "unknown_usage"]
FILE_CASES = ["missing_column", "empty_file"]


@pytest.mark.parametrize("kind", ROW_CASES + FILE_CASES)
def test_bad_input_is_one_line_error_naming_file_and_line(kind, fer_sample, tmp_path, capsys):
    text, line = _bad(kind, fer_sample)
    path = tmp_path / f"{kind}.csv"
    path.write_text(text)
    rc = main(["data", "info", str(path)])
    out = capsys.readouterr()
    assert rc == 2
    err = out.err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in out.err
    assert str(path) in err
    if line is not None:
        assert f"{path}:{line}:" in err
    else:
        assert "empty" in err
    expected_word = {"wrong_pixel_count": "2303 pixel values", "non_integer_pixel": "non-integer",
                     "out_of_range_pixel": "out of range", "unknown_label": "unknown emotion label",
                     "unknown_usage": "unknown Usage", "missing_column": "missing column",
                     "empty_file": "empty"}[kind]
    assert expected_word in err


@pytest.mark.parametrize("kind", ROW_CASES)
def test_skip_bad_turns_bad_rows_into_counted_warnings(kind, fer_sample, tmp_path, capsys):
    text, line = _bad(kind, fer_sample)
    path = tmp_path / f"{kind}.csv"
    path.write_text(text)
    rc = main(["data", "info", str(path), "--skip-bad"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "1 warning(s)" in out.out
    assert f"{path}:{line}:" in out.out
    ds = load_dataset(path, skip_bad=True)
    assert len(ds) == 5 and len(ds.warnings) == 1
    assert "2" not in ds.ids  # the bad row (data row 2 = line 4) is the one left out


@pytest.mark.parametrize("kind", FILE_CASES)
def test_skip_bad_does_not_hide_file_level_errors(kind, fer_sample, tmp_path):
    text, _ = _bad(kind, fer_sample)
    path = tmp_path / f"{kind}.csv"
    path.write_text(text)
    with pytest.raises(DataError):
        load_fer2013_csv(path, skip_bad=True)


def test_missing_file_is_one_line_error(tmp_path, capsys):
    rc = main(["data", "info", str(tmp_path / "nope.csv")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "nope.csv" in err and len(err.splitlines()) == 1


def test_info_prints_the_count_table(sample_copy, capsys):
    assert main(["data", "info", str(sample_copy)]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines() if ln and ln.split()[0] in
             ("Training", "PublicTest", "PrivateTest", "total")}
    assert lines["Training"] == ["560"] + ["80"] * 7
    assert lines["PublicTest"] == ["70"] + ["10"] * 7
    assert lines["total"] == ["700"] + ["100"] * 7


# README table of the full file
FULL_COUNTS = {
    "Training": [3995, 436, 4097, 7215, 4830, 3171, 4965],
    "PublicTest": [467, 56, 496, 895, 653, 415, 607],
    "PrivateTest": [491, 55, 528, 879, 594, 416, 626],
}


@pytest.mark.slow
def test_full_file_class_counts_match_readme():
    if not FER_FULL.exists():
        pytest.skip(f"{FER_FULL} not present")
    ds = load_fer2013_csv(FER_FULL)
    assert len(ds) == 35887
    table = ds.class_counts()
    assert list(table) == ["Training", "PublicTest", "PrivateTest"]
    for split, counts in FULL_COUNTS.items():
        assert [table[split][c] for c in FER2013_CLASSES] == counts
    assert sum(sum(v.values()) for v in table.values()) == 35887
    assert [sum(table[s].values()) for s in FULL_COUNTS] == [28709, 3589, 3589]
