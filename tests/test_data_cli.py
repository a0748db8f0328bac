"""ferlab data show / check: real PNG grids and the check report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ferlab.cli import main


@pytest.fixture()
def sample_copy(fer_sample, tmp_path):
    dst = tmp_path / "fer2013_sample.csv"
    dst.write_bytes(fer_sample.read_bytes())
    return dst


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size, np.asarray(im.convert("L"))


def test_show_writes_a_labelled_grid(sample_copy, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["data", "show", str(sample_copy), "--out", str(out), "--per-class", "3"]) == 0
    size, pixels = _png(out)
    # 64 dpi: 1.5 in labels + 3 cells of 1 in + 0.25 in; 0.5 in title + 7 rows + 0.25 in
    assert size == (304, 496)
    assert pixels.std() > 20  # faces drawn, not an empty canvas
    assert "wrote" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_show_split_and_augment_preview(sample_copy, tmp_path):
    out = tmp_path / "aug.png"
    assert main(["data", "show", str(sample_copy), "--out", str(out), "--per-class", "3", "--split",
                 "PublicTest", "--augment"]) == 0
    size, _ = _png(out)
    assert size == (528, 496)  # original and augmented panels side by side
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: fernet\naugment: {crop: 40, flip: 1.0}\n")
    out2 = tmp_path / "aug2.png"
    assert main(["data", "show", str(sample_copy), "--out", str(out2), "--per-class", "2", "--augment",
                 str(recipe)]) == 0
    assert _png(out2)[0] == (1.5 * 64 + 4 * 64 + 0.5 * 64 + 16, 496)


def test_show_bad_options_are_one_line_errors(sample_copy, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("augment: {crop: 40, twirl: 3}\n")
    rc = main(["data", "show", str(sample_copy), "--out", str(tmp_path / "g.png"), "--augment", str(recipe)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "twirl" in err and len(err.splitlines()) == 1
    rc = main(["data", "show", str(sample_copy), "--out", str(tmp_path / "g.png"), "--split", "Validation"])
    assert rc == 2 and "Validation" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


def test_check_reports_duplicates_blanks_and_imbalance(sample_copy, tmp_path, capsys):
    # append a blank row and a bad row to the sample
    text = sample_copy.read_text().rstrip("\n").split("\n")
    text.append("3," + " ".join(["7"] * 2304) + ",PublicTest")
    text.append("3,1 2 3,PublicTest")
    path = tmp_path / "s2.csv"
    path.write_text("\n".join(text) + "\n")
    js = tmp_path / "report.json"
    assert main(["data", "check", str(path), "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "loader warnings (bad rows skipped, classes dropped): 1" in out
    assert f"{path}:703:" in out
    # the sample happens to hold 2 images that are in both Training and PrivateTest
    assert "2 PrivateTest rows also appear in Training" in out
    assert "blank images (one grey level): 1" in out
    assert "PublicTest: 1.1 (happy 11 / angry 10)" in out
    doc = json.loads(js.read_text())
    assert doc["leakage"]["exact_across"]["Training|PrivateTest"]["rows_b"] == 2
    assert doc["leakage"]["blank"]["PublicTest"] == 1
    assert doc["counts"]["PublicTest"]["happy"] == 11
