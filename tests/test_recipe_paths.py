"""Recipe data paths: beside the recipe file, else under $FERLAB_DATA, else from the current folder (the
recipes in configs/ say ``../shared/datasets/...`` and the README runs them from the repository root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ferlab.training.config import load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("FERLAB_DATA", raising=False)
    return cwd


def test_data_beside_the_recipe(tmp_path, elsewhere):
    (tmp_path / "recipes" / "data").mkdir(parents=True)
    (tmp_path / "recipes" / "data" / "faces.csv").write_text("x")
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.write_text("model: fernet\ndata: data/faces.csv\nextra_data: [data]\n")
    cfg = load_config(recipe)
    assert Path(cfg.data).resolve() == (tmp_path / "recipes" / "data" / "faces.csv").resolve()
    assert Path(cfg.extra_data[0]).resolve() == (tmp_path / "recipes" / "data").resolve()


def test_data_under_ferlab_data(tmp_path, elsewhere, monkeypatch):
    store = tmp_path / "store"
    (store / "fer2013").mkdir(parents=True)
    (store / "fer2013" / "f.csv").write_text("x")
    monkeypatch.setenv("FERLAB_DATA", str(store))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: fernet\ndata: fer2013/f.csv\n")
    assert Path(load_config(recipe).data).resolve() == (store / "fer2013" / "f.csv").resolve()


def test_repository_recipes_still_resolve_from_the_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("FERLAB_DATA", raising=False)
    cfg = load_config(ROOT / "configs" / "fernet.yaml")
    assert cfg.data == "../shared/datasets/fer2013/fer2013.csv.gz"  # as written: from the repository root


def test_missing_data_stays_as_written(tmp_path, elsewhere):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: fernet\ndata: nowhere/f.csv\n")
    assert load_config(recipe).data == "nowhere/f.csv"


def test_overrides_are_from_the_current_folder(tmp_path, elsewhere):
    (tmp_path / "d.csv").write_text("x")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: fernet\n")
    assert load_config(recipe, ["data=here.csv"]).data == "here.csv"
    assert not os.path.isabs(load_config(recipe, ["data=here.csv"]).data)
