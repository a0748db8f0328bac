"""The inference options table (``ferlab.inference.options``): one place for each option's values, range,
default and help, from which argparse, the HTTP query parameters, ``BatchOptions`` and the Recognizer's
checks derive (issue 23 item 1)."""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pytest
from helpers_models import make_tiny_model

from ferlab.cli import build_parser, main
from ferlab.errors import FerlabError
from ferlab.inference.options import FIELD, FIELDS, SEARCH_CHOICES, InferenceOptions

#: (option, bad value) refused everywhere: by the table, the CLI and the Python API
BAD = [("search", "slow"), ("on_no_face", "guess"), ("min_face", 4), ("max_side", 0), ("margin", 5.0),
       ("threads", 0), ("threads", 257)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    make_tiny_model(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return str(tiny_dir / "tiny.onnx")


def _sub(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _actions(name: str) -> dict:
    return {a.dest: a for a in _sub(name)._actions}


def test_table_values_match_the_library():
    from ferlab.inference import blazeface, recognizer

    assert SEARCH_CHOICES == blazeface.SEARCH_MODES and FIELD["search"].choices == blazeface.SEARCH_MODES
    assert FIELD["search"].default == blazeface.DEFAULT_SEARCH
    assert FIELD["on_no_face"].choices == recognizer.ON_NO_FACE and FIELD["tta"].choices == recognizer.TTA_MODES
    assert recognizer.PHOTO_TTA in FIELD["tta"].choices
    assert [f.name for f in FIELDS] == ["model", "detector", "search", "on_no_face", "align", "margin", "min_face",
                                        "max_side", "threads", "tta"]
    assert all(f.help for f in FIELDS)


@pytest.mark.parametrize("command", ["predict", "video", "batch"])
def test_flags_come_from_the_table(command):
    """Same flag, default, choices, range and help (plus the command's note) as the table's row."""
    actions = _actions(command)
    seen = 0
    for f in FIELDS:
        a = actions.get(f.name)
        if a is None:
            continue
        seen += 1
        assert f.flag in a.option_strings
        assert a.help.startswith(f.help.split("{where}")[0]), (command, f.name)
        if f.kind == "choice":
            assert tuple(a.choices) == f.choices
        if f.kind in ("int", "float"):
            assert a.type(str(f.lo)) == f.lo
            with pytest.raises(argparse.ArgumentTypeError, match=f.range_text().replace("[", r"\[")):
                a.type(str(f.lo - 1))
        if not (command == "batch" and f.name == "detector"):
            assert a.default == f.default, (command, f.name)
    assert seen >= 6


def test_predict_help_is_the_tables():
    actions = _actions("predict")
    for name in ("model", "detector", "on_no_face", "align", "margin", "min_face", "max_side", "threads"):
        assert actions[name].help == FIELD[name].help
    assert actions["search"].help == FIELD["search"].help.format(where="each image")


@pytest.mark.parametrize("name,value", BAD)
def test_a_bad_value_is_refused_the_same_way(name, value, tiny, capsys):
    from ferlab.inference.recognizer import Recognizer

    with pytest.raises(FerlabError) as e:
        InferenceOptions(**{name: value}).checked()
    assert e.value.kind == "bad_option" and "\n" not in str(e.value) and str(e.value).startswith(f"{name} must be")
    with pytest.raises(FerlabError) as r:  # the Python API: the same line
        Recognizer(model=tiny, **{name: value})
    assert str(r.value) == str(e.value) and r.value.kind == "bad_option"
    flag = FIELD[name].flag
    with pytest.raises(SystemExit) as cli:  # the CLI: argparse's one line, exit 2, before anything loads
        main(["predict", "x.jpg", flag, str(value)])
    assert cli.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and str(value) in err


def test_the_api_refuses_with_422_json(tiny_dir):
    pytest.importorskip("fastapi")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from ferlab.serving import create_app

    with TestClient(create_app(tiny_dir, "tiny", workers=1, threads=1), base_url="http://localhost") as c:
        for name, value in (("search", "slow"), ("on_no_face", "guess")):
            r = c.post(f"/v1/predict?{name}={value}", content=b"x", headers={"Content-Type": "image/png"})
            assert r.status_code == 422 and r.json()["kind"] == "bad_request" and name in r.json()["detail"]
        spec = c.get("/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"]["/v1/predict"]["post"]["parameters"]}
    assert params["on_no_face"]["description"].startswith(FIELD["on_no_face"].help)
    assert params["search"]["description"].startswith(FIELD["search"].help.format(where="the uploaded photo"))
    text = str(params["search"]["schema"])
    assert all(s in text for s in SEARCH_CHOICES)


def test_checked_normalises_and_builds_the_recognizer(tiny):
    from ferlab.inference.recognizer import Recognizer

    opts = InferenceOptions(model=tiny, detector="haar", search=" FAST ", on_no_face="WHOLE", margin=0,
                            min_face=24, threads=1, align=True, tta="none").checked()
    assert (opts.search, opts.on_no_face, opts.margin) == ("fast", "whole", 0.0)
    rec = Recognizer.from_options(opts)
    assert (rec.on_no_face, rec.align, rec.tta, rec.margin) == ("whole", True, "none", 0.0)
    # a search with a detector that offers none is ignored (the detector declares its searches)
    assert rec.detector.searches == ()
    assert rec.predict(np.zeros((200, 200, 3), np.uint8))[0].no_face
    assert InferenceOptions.from_args(argparse.Namespace(search="thorough", quiet=True)).search == "thorough"


def test_batch_options_are_checked_by_the_table():
    from ferlab.batch import BatchOptions

    assert set(BatchOptions().row_options()) == {"model", "detector", "min_face", "max_side", "margin", "video_fps",
                                                 "segment_seconds", "on_no_face", "search"}
    for name, value in BAD:
        with pytest.raises(FerlabError, match=f"{name} must be") as e:
            BatchOptions(**{name: value})
        assert e.value.kind == "bad_option"
    o = BatchOptions(search="Thorough", min_face=30)
    assert o.search == "thorough" and o.inference_options().min_face == 30
    assert o.inference_options().recognizer_kwargs()["detector"] == FIELD["detector"].default


def test_video_search_with_fast_is_refused():
    from ferlab.inference.video import check_video_search

    assert check_video_search(None, True) is None and check_video_search("fast", True) == "fast"
    with pytest.raises(FerlabError, match="do not go together"):
        check_video_search("thorough", True)
    with pytest.raises(FerlabError, match="search must be one of"):
        check_video_search("slow", False)
