"""Issue 23, defect 13: a recipe that is not UTF-8 YAML (UTF-16, Latin-1, binary, a JPEG) and a run folder whose
``config.yaml`` is malformed give one line naming the file and exit 2 in ``train``, ``evaluate``, ``export``,
``features`` and ``teacher`` (they gave a traceback and exit 1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers_models import ASTRONAUT

from ferlab.cli import main
from ferlab.errors import FerlabError
from ferlab.training.rundir import RunDir

pytest.importorskip("torch")

#: file contents that are no recipe: text in another encoding, binary, nesting past the parser's stack
NOT_UTF8 = {
    "utf16": "epochs: 1\nmodel: fernét\n".encode("utf-16"),
    "latin1": "epochs: 1\n# café\n".encode("latin-1"),
    "binary": bytes(range(256)) * 4,
}
MALFORMED = {
    **NOT_UTF8,
    "not-yaml": b"model: [fernet\nepochs: 3\n",
    "deep": b"[" * 100_000,
    "a-list": b"- model\n- fernet\n",
    "empty": b"",
    "unknown-key": b"model: fernet\nno_such_key: 1\n",
    "bad-value": b"epochs: many\n",
}


def one_line_exit_2(argv: list[str], capsys) -> str:
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == 2, (argv, rc, err)
    assert err.startswith(f"ferlab {argv[0]}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _file(tmp_path: Path, kind: str, name: str) -> Path:
    f = tmp_path / name
    if kind == "jpeg":
        shutil.copy(ASTRONAUT, f)
    else:
        f.write_bytes(MALFORMED[kind])
    return f


@pytest.mark.parametrize("kind", [*NOT_UTF8, "jpeg", "not-yaml", "deep"])
def test_a_recipe_that_is_not_utf8_yaml_is_one_line(tmp_path, capsys, kind):
    recipe = _file(tmp_path, kind, "bad.yaml")
    err = one_line_exit_2(["train", str(recipe), "--out", str(tmp_path / "run")], capsys)
    assert str(recipe) in err
    if kind in (*NOT_UTF8, "jpeg"):
        assert "not UTF-8" in err
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.fixture
def bad_run(tmp_path, request):
    run = tmp_path / "run"
    run.mkdir()
    _file(run, request.param, "config.yaml")
    return run


@pytest.mark.parametrize("bad_run", [*MALFORMED, "jpeg"], indirect=True)
@pytest.mark.parametrize("command", ["evaluate", "export", "features", "teacher"])
def test_a_run_with_a_malformed_config_is_one_line(bad_run, fer_sample, tmp_path, capsys, command):
    argv = {"evaluate": ["evaluate", str(bad_run), str(fer_sample), "--out", str(tmp_path / "eval")],
            "export": ["export", str(bad_run), "--out", str(tmp_path / "exported")],
            "features": ["features", str(bad_run), "--data", str(fer_sample), "--out", str(tmp_path / "features")],
            "teacher": ["teacher", str(bad_run), "--data", str(fer_sample), "--out", str(tmp_path / "t.npz")]}[command]
    err = one_line_exit_2(argv, capsys)
    assert str(bad_run / "config.yaml") in err
    assert not any(p.name in ("eval", "exported", "features", "t.npz") for p in tmp_path.iterdir())


def test_run_dir_readers_name_the_file(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "config.yaml").write_bytes(NOT_UTF8["utf16"])
    with pytest.raises(FerlabError, match="config.yaml: not UTF-8"):
        run.read_config()
    with pytest.raises(FerlabError, match="config.yaml: not UTF-8"):
        run.read_config_dict(strict=True)
    assert run.read_config_dict() == {}  # the tolerant reader (ensembles, the card's init) skips it
    for text in ("{not json", "[1, 2]", "\udcff"):
        (tmp_path / "summary.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        with pytest.raises(FerlabError, match="summary.json: not a valid summary"):
            run.read_summary()
