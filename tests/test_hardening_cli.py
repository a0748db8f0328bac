"""Issue 13: one line, exit 2, never a traceback; eager validation; nothing half-made; cards; the umask.

Plus the CLI conventions of issue 14 taken here: ``--json -`` / ``--csv -`` write to stdout, one
``--progress/--no-progress`` switch, ``ferlab compare`` skips paths that are not runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ferlab.cli import main
from ferlab.errors import FerlabError

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "examples" / "astronaut.jpg"
FER_SAMPLE = ROOT.parent / "shared" / "datasets" / "fer2013" / "fer2013_sample.csv"
ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


def one_line_exit_2(argv: list[str], capsys) -> str:
    """Run ``ferlab ARGV``: exit code 2 (returned or raised by argparse), one line on stderr, no traceback."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == 2, (argv, rc, err)
    assert err.startswith("ferlab") and "\n" not in err and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------ numeric options
@pytest.mark.parametrize("argv", [
    ["predict", str(FACE), "--margin", "1e9"], ["predict", str(FACE), "--margin", "nan"],
    ["predict", str(FACE), "--threads", "100000"], ["predict", str(FACE), "--threads", "-1"],
    ["predict", str(FACE), "--max-side", "-1"], ["predict", str(FACE), "--min-face", "0"],
    ["video", "in.mp4", "--max-frames", "-1"], ["video", "in.mp4", "--every", "0"],
    ["video", "in.mp4", "--smoothing", "inf"], ["serve", "--max-body-mb", "nan"], ["serve", "--workers", "0"],
    ["serve", "--max-body-mb", "1e30"], ["evaluate", "default", "--bootstrap", "-5"],
    ["data", "show", "x.csv", "--out", "g.png", "--per-class", "0"], ["models", "--size", "abc"],
    ["tune", "--trials", "0", "--out", "t"], ["export", "run", "--margin", "-3"],
])
def test_numeric_options_checked(argv, capsys):
    err = one_line_exit_2(argv, capsys)
    assert "argument --" in err


@pytest.mark.parametrize("override,fragment", [
    ("epochs=abc", "epochs"), ("batch_size=0", "batch_size"), ("lr=-1", "lr"), ("augment=5", "augment"),
    ("augment.crop=100", "augment.crop"), ("amp=fp8", "amp"), ("epochs=-1", "epochs"),
    ("epochs=+5", "epochs"), ("balance_counts.surprise=-3", "balance_counts"), ("lr=nan", "lr"), ("momentum=1", "momentum"),
    ("stages=[{lr: -1}]", "stages"), ("nesterov=maybe", "nesterov"), ("labels=ferplus-bogus", "labels"),
    ("optimizer=lion", "optimizer"), ("augment.wobble=1", "wobble"),
])
def test_recipe_keys_checked_before_anything(override, fragment, tmp_path, capsys):
    out = tmp_path / "run"
    err = one_line_exit_2(["train", override, "--out", str(out)], capsys)
    assert fragment in err
    assert not out.exists()  # nothing written, no run directory


def test_signed_count_kept_as_relative():
    """``balance_counts.surprise=+10`` means "add 10" (balance.py's '+n'); YAML alone read it as 10."""
    from ferlab.training.config import load_config

    cfg = load_config(None, ["balance=targeted", "balance_counts.surprise=+10", "balance_counts.fear=250"])
    assert cfg.balance_counts == {"surprise": "+10", "fear": 250}


def test_device_without_cuda(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    err = one_line_exit_2(["train", "device=cuda", "--out", str(tmp_path / "r")], capsys)
    assert "CUDA" in err and not (tmp_path / "r").exists()


def test_every_recipe_key_has_a_rule_and_the_recipes_pass():
    from ferlab.training.config import RULES, TrainConfig, load_config

    missing = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in RULES]
    assert not missing, f"add a rule to training/config.py RULES for: {missing}"
    for recipe in sorted((ROOT / "configs").glob("**/*.yaml")):
        load_config(recipe)  # every shipped recipe is valid


def test_failed_train_leaves_no_run_directory(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "run"
    one_line_exit_2(["train", f"data={tmp_path / 'missing.csv'}", "epochs=1", "--out", str(out)], capsys)
    assert not out.exists()


# ------------------------------------------------------------------------------------- output paths
def _bad_outputs(tmp_path: Path) -> dict[str, str]:
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    return {"proc": "/proc/x.json", "folder": str(tmp_path), "under_a_file": str(a_file / "out.json")}


@pytest.mark.parametrize("which", ["proc", "folder", "under_a_file"])
def test_unwritable_outputs_refused_before_work(which, tmp_path, capsys):
    bad = _bad_outputs(tmp_path)[which]
    missing_input = str(tmp_path / "no_such_input")
    cases = [
        ["predict", str(FACE), "--json", bad], ["predict", str(FACE), "--csv", bad],
        ["video", missing_input, "--csv", bad], ["video", missing_input, "--timeline", bad],
        ["video", missing_input, "--json", bad],
        ["data", "check", missing_input, "--json", bad], ["data", "show", missing_input, "--out", bad],
        ["train", "--out", bad + "/run"] if which != "folder" else ["train", "--out", "/proc/run"],
    ]
    for argv in cases:
        err = one_line_exit_2(argv, capsys)
        assert bad.split("/")[-1] in err or "/proc" in err, (argv, err)
        assert "no_such_input" not in err  # the output is checked before the input is read


def test_output_folder_options(tmp_path, capsys):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    err = one_line_exit_2(["predict", str(FACE), "--annotate", str(a_file)], capsys)
    assert "needs a folder" in err
    err = one_line_exit_2(["evaluate", "default", str(FER_SAMPLE), "--out", str(a_file)], capsys)
    assert "needs a folder" in err


@pytest.mark.skipif(ROOT_USER, reason="root writes into read-only folders")
def test_read_only_folder_refused(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        err = one_line_exit_2(["predict", str(FACE), "--json", str(ro / "r.json")], capsys)
        assert "cannot write" in err
    finally:
        ro.chmod(0o755)


@pytest.mark.skipif(ROOT_USER, reason="root reads files without read permission")
def test_unreadable_input_one_line(tmp_path, capsys):
    f = tmp_path / "data.csv"
    f.write_text("emotion,pixels,Usage\n")
    f.chmod(0)
    one_line_exit_2(["data", "info", str(f)], capsys)


def test_any_os_error_is_one_line(monkeypatch, capsys):
    """The safety net: an OSError from any command (here: permission denied reading a file) is one line."""
    from ferlab.commands import data as data_cmd

    def denied(args):
        raise PermissionError(13, "Permission denied", "/data/fer2013.csv")

    monkeypatch.setattr(data_cmd, "run_info", denied)  # the parser binds run_info when main() builds it
    err = one_line_exit_2(["data", "info", "x.csv"], capsys)
    assert err == "ferlab data: error: /data/fer2013.csv: Permission denied"


# ---------------------------------------------------------------------------------- stdout and progress
def test_json_and_csv_to_stdout(capsys):
    assert main(["predict", str(FACE), "--json", "-", "--model", "fast"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)  # nothing but the JSON on stdout (no table)
    assert doc["images"][0]["file"].endswith("astronaut.jpg")
    assert main(["predict", str(FACE), "--csv", "-", "--model", "fast"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("file,face,") and len(lines) >= 2
    assert not Path("-").exists()
    err = one_line_exit_2(["predict", str(FACE), "--json", "-", "--csv", "-"], capsys)
    assert "both" in err


def test_data_check_json_to_stdout(capsys):
    if not FER_SAMPLE.exists():
        pytest.skip("no FER2013 sample")
    assert main(["data", "check", str(FER_SAMPLE), "--json", "-", "--no-near"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["n"] == 700 and "duplicates" in cap.err


def test_one_progress_switch():
    from ferlab.cli import build_parser

    parser = build_parser()
    for argv in (["train", "--no-progress"], ["evaluate", "m", "--no-progress"], ["predict", "x", "--no-progress"],
                 ["video", "v.mp4", "--no-progress"], ["ensemble", "a", "--data", "d", "--no-progress"],
                 ["tune", "--out", "o", "--no-progress"]):
        assert parser.parse_args(argv).progress is False, argv
    for argv in (["train", "--progress"], ["tune", "--out", "o", "--progress"], ["predict", "x", "--progress"]):
        assert parser.parse_args(argv).progress is True, argv


def test_compare_skips_paths_that_are_not_runs(tmp_path, capsys):
    import yaml

    run = tmp_path / "run-a"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "fernet", "lr": 0.1}))
    (tmp_path / "notes.txt").write_text("not a run")
    (tmp_path / "empty").mkdir()
    assert main(["compare", *sorted(str(p) for p in tmp_path.iterdir())]) == 0
    cap = capsys.readouterr()
    assert "run-a" in cap.out and cap.err.count("skipped") == 2
    one_line_exit_2(["compare", str(tmp_path / "notes.txt")], capsys)


# ------------------------------------------------------------------------------ umask and temporaries
def test_outputs_honour_the_umask(tmp_path):
    from ferlab.io import atomic_write

    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.json", lambda t: Path(t).write_text("{}"))
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
        os.umask(0o022)
        atomic_write(tmp_path / "b.csv", lambda t: Path(t).write_text("x"))
        assert (tmp_path / "b.csv").stat().st_mode & 0o777 == 0o644
        (tmp_path / "b.csv").chmod(0o600)  # a replaced file keeps its mode, like open(path, "w")
        atomic_write(tmp_path / "b.csv", lambda t: Path(t).write_text("y"))
        assert (tmp_path / "b.csv").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_predict_json_mode_follows_umask(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        assert main(["predict", str(FACE), "--model", "fast", "--json", str(tmp_path / "r.json"), "-q"]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ferlab.io import atomic_write
    def write(tmp):
        Path(tmp).write_text("half")
        Path(sys.argv[2]).write_text("inside")
        time.sleep(600)
    atomic_write(sys.argv[1], write)
""")


def test_sigkill_orphans_swept_by_the_next_write(tmp_path):
    from ferlab.io import atomic_write

    target, flag = tmp_path / "curves.png", tmp_path / "inside"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target), str(flag)])
    try:
        deadline = time.time() + 60
        while not flag.exists():
            assert time.time() < deadline and proc.poll() is None, "writer did not start"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    orphans = list(tmp_path.glob(".curves.png.*.tmp"))
    assert len(orphans) == 1 and not target.exists()  # what SIGKILL leaves
    atomic_write(target, lambda t: Path(t).write_text("done"))
    assert target.read_text() == "done" and not list(tmp_path.glob(".curves.png.*.tmp"))
    live = tmp_path / f".curves.png.{os.getpid()}.x.tmp"  # a live writer's temporary is left alone
    live.write_text("mine")
    atomic_write(target, lambda t: Path(t).write_text("again"))
    assert live.exists()


def test_failed_export_leaves_no_onnx_without_card(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    import yaml

    from ferlab.models import create_model
    from ferlab.training import export as export_mod
    from ferlab.training.checkpoint import save_weights
    from ferlab.training.config import TrainConfig

    torch.manual_seed(0)
    run = tmp_path / "run"
    run.mkdir()
    save_weights(create_model("fernet_fast").eval(), run / "model.safetensors")
    (run / "config.yaml").write_text(yaml.safe_dump(TrainConfig(model="fernet_fast").to_dict()))
    classes = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    (run / "summary.json").write_text(json.dumps({"model": "fernet_fast", "classes": classes, "input_size": 44}))

    def fail(*a, **k):
        raise FerlabError("card could not be written")

    monkeypatch.setattr(export_mod, "finish_card", fail)
    out = tmp_path / "out"
    with pytest.raises(FerlabError):
        export_mod.export_run(run, out, calibrate=False)
    assert not list(out.glob("*.onnx")) and not list(out.glob("*.json"))


# ------------------------------------------------------------------------------------------ model cards
def _copy_model(tmp_path: Path, name: str = "fast") -> Path:
    from ferlab.zoo import ZOO_DIR

    shutil.copy(ZOO_DIR / f"{name}.onnx", tmp_path / "m.onnx")
    shutil.copy(ZOO_DIR / f"{name}.json", tmp_path / "m.json")
    return tmp_path / "m.onnx"


@pytest.mark.parametrize("change,fragment", [
    ({"sha256": None}, "no sha256"), ({"input_size": 4}, "input_size"), ({"classes": []}, "classes"),
    ({"classes": ["a", "a"]}, "classes"), ({"temperature": -1}, "temperature"), ({"face_margin": 9}, "face_margin"),
    ({"sha256": "zz"}, "sha256"), ({"input_size": "48"}, "input_size"),
])
def test_bad_cards_refused(tmp_path, change, fragment):
    from ferlab.inference.recognizer import Recognizer

    onnx = _copy_model(tmp_path)
    card = json.loads(onnx.with_suffix(".json").read_text())
    for k, v in change.items():
        if v is None:
            card.pop(k)
        else:
            card[k] = v
    onnx.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(FerlabError, match=fragment):
        Recognizer(str(onnx))


def test_modified_onnx_without_hash_no_longer_loads(tmp_path):
    from ferlab.inference.recognizer import Recognizer

    onnx = _copy_model(tmp_path)
    card = json.loads(onnx.with_suffix(".json").read_text())
    del card["sha256"]
    onnx.with_suffix(".json").write_text(json.dumps(card))
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(FerlabError, match="sha256"):
        Recognizer(str(onnx))


def test_bundled_cards_are_read_only(tmp_path, capsys):
    from ferlab.zoo import ZOO_DIR, is_bundled

    before = (ZOO_DIR / "fast.json").read_bytes()
    csv = tmp_path / "tiny.csv"
    csv.write_text("emotion,pixels,Usage\n" + "".join(f"{i % 7},{' '.join(['128'] * 2304)},PrivateTest\n"
                                                      for i in range(14)))
    for model in ("fast", str(ZOO_DIR / "fast.onnx")):
        err = one_line_exit_2(["evaluate", model, str(csv), "--record-card", "--out", str(tmp_path / "e")], capsys)
        assert "bundled" in err
    assert (ZOO_DIR / "fast.json").read_bytes() == before
    assert is_bundled("default") and not is_bundled(tmp_path / "m.onnx")
