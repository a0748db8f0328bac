"""Issue 23, the defects found trying ferlab as a new user would: each test fails on the code before its fix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_models import ASTRONAUT, make_tiny_model

from ferlab.cli import main
from ferlab.errors import FerlabError

ROOT = Path(__file__).resolve().parents[1]
FERLAB = [sys.executable, "-m", "ferlab.cli"]
N_FRAMES, W, H, FPS = 12, 320, 240, 10


def run_cli(*args, env=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([*FERLAB, *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=timeout)


def count_frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def one_line_error(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(w in lines[0] for w in words), err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 12-frame MJPG .avi of the astronaut's head moving right."""
    head = cv2.imread(str(ASTRONAUT))[20:240, 120:340]
    path = tmp_path_factory.mktemp("video") / "in.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert vw.isOpened()
    for i in range(N_FRAMES):
        frame = np.full((H, W, 3), 90, np.uint8)
        frame[10:230, 10 + 5 * i:230 + 5 * i] = head
        vw.write(frame)
    vw.release()
    assert count_frames(path) == N_FRAMES
    return path


# -- 1. an output format the writer cannot write is refused before any work -------------------------------------

@pytest.mark.parametrize("name", ["x.gif", "x.png", "x.flv", "x"])
def test_video_out_format_refused_before_work(tiny, clip, tmp_path, capsys, monkeypatch, name):
    from ferlab.inference import video as vid

    opened = []  # "before any work": the input video is never opened
    monkeypatch.setattr(vid, "open_video", lambda p, real=vid.open_video: opened.append(p) or real(p))
    rc = main(["video", str(clip), "--out", str(tmp_path / name), "--model", tiny, "--no-progress"])
    assert rc == 2 and not opened
    one_line_error(capsys.readouterr().err, "--out", "cannot write", ".webm")
    assert list(tmp_path.iterdir()) == []  # no 1-frame .gif, no numbered temp files
    with pytest.raises(FerlabError, match="cannot write a .gif video"):
        vid.process_video(clip, tmp_path / "y.gif", model=tiny)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".mkv", ".mov", ".avi", ".m4v"])
def test_video_out_formats_accepted_are_written_whole(tiny, clip, tmp_path, suffix):
    from ferlab.inference.video import process_video

    out = tmp_path / f"annotated{suffix}"
    s = process_video(clip, out, model=tiny)
    assert s["frames"] == N_FRAMES and count_frames(out) == N_FRAMES
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


# -- 17. a .webm is written without OpenCV's "tag VP90 is not supported" line --------------------------------------

def test_video_webm_stderr_has_no_opencv_noise(tiny, clip, tmp_path):
    out = tmp_path / "x.webm"
    r = run_cli("video", clip, "--out", out, "--model", tiny, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "not supported" not in r.stderr and "OpenCV" not in r.stderr and "FFMPEG" not in r.stderr, r.stderr
    assert count_frames(out) == N_FRAMES


def test_quiet_stderr_keeps_other_lines(capfd):
    from ferlab.inference.video import _WRITER_NOISE, _quiet_stderr

    with _quiet_stderr(_WRITER_NOISE):
        os.write(2, b"kept line\nOpenCV: FFMPEG: tag 0x30395056/'VP90' is not supported with codec id 167\n")
    err = capfd.readouterr().err
    assert "kept line" in err and "VP90" not in err


# -- 9. a photo is not a one-frame video ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,fmt", [("photo.jpg", "JPEG"), ("photo.mp4", "PNG"), ("photo.webp", "WEBP"),
                                      ("photo.bmp", "BMP"), ("photo.tif", "TIFF")])
def test_video_refuses_an_image(tiny, tmp_path, capsys, name, fmt):
    from PIL import Image

    Image.open(ASTRONAUT).convert("RGB").save(tmp_path / name, format=fmt)
    assert main(["video", str(tmp_path / name), "--model", tiny, "--csv", str(tmp_path / "f.csv"),
                 "--no-progress"]) == 2
    one_line_error(capsys.readouterr().err, name, "is an image", "ferlab predict")
    assert not (tmp_path / "f.csv").exists()


def test_video_still_reads_a_video_named_like_an_image(tiny, clip, tmp_path):
    """The refusal reads the first bytes, not the name."""
    from ferlab.inference.video import process_video

    odd = tmp_path / "clip.jpg"
    odd.write_bytes(clip.read_bytes())
    assert process_video(odd, model=tiny)["frames"] == N_FRAMES


# -- 2. webcam without a window: a video file is refused, no browser is tried where there is no display ------------

class _Timers:
    """Stands for threading.Timer: records what would have run (the browser opening) without starting it."""

    made: list = []

    def __init__(self, delay, fn, *a, **k):
        _Timers.made.append(fn)

    def start(self):
        pass


@pytest.fixture()
def headless(monkeypatch):
    """Linux with no display; `ferlab serve` and the browser stubbed: returns (served, browser calls)."""
    import threading
    import webbrowser

    from ferlab.commands import serve

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    served, opened = [], []
    monkeypatch.setattr(serve, "run", lambda a: served.append(a) or 0)
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url))
    _Timers.made = []
    monkeypatch.setattr(threading, "Timer", _Timers)
    return served, opened


def test_webcam_video_file_without_window_is_refused(tiny, clip, headless, capsys):
    served, opened = headless
    assert main(["webcam", "--camera", str(clip), "--model", tiny]) == 2
    one_line_error(capsys.readouterr().err, "--camera", str(clip), "ferlab video")
    assert served == [] and opened == [] and _Timers.made == []


def test_webcam_no_display_prints_the_url_without_a_browser(tiny, headless, capsys, monkeypatch):
    served, opened = headless
    assert main(["webcam", "--model", tiny, "--port", "8766"]) == 0
    err = capsys.readouterr().err
    assert "http://localhost:8766/" in err and "opening it in your browser" not in err
    assert len(served) == 1 and opened == [] and _Timers.made == []
    # a display (headless OpenCV, so still no window): the browser is opened
    from ferlab.commands import webcam

    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(webcam, "gui_problem", lambda: "this OpenCV build has no GUI (opencv-python-headless)")
    assert main(["webcam", "--model", tiny, "--port", "8766", "--camera", "0"]) == 0
    assert "opening it in your browser" in capsys.readouterr().err and len(_Timers.made) == 1


# -- 3. ferlab export takes the --progress/--no-progress switch the README promises to long commands -------------

def test_export_takes_the_progress_switch(capsys):
    from ferlab.cli import build_parser

    parser = build_parser()
    for flag, value in (("--no-progress", False), ("--progress", True)):
        args = parser.parse_args(["export", "runs/x", flag])
        assert args.command == "export" and args.progress is value
    # through the whole CLI: the switch is accepted and the run directory is what is refused
    assert main(["export", "no/such/run", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized" not in err and "no/such/run" in err


# -- 4. curves.png of a 1-epoch run shows its point ------------------------------------------------------------

def _blobs(png: Path, rgb_hex: str) -> int:
    """Connected blobs (of 12 px or more) of one colour in an image."""
    bgr = np.array([int(rgb_hex[i:i + 2], 16) for i in (5, 3, 1)], np.int16)
    img = cv2.imread(str(png), cv2.IMREAD_COLOR).astype(np.int16)
    mask = (np.abs(img - bgr).max(axis=2) < 40).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    return int((stats[1:, cv2.CC_STAT_AREA] >= 12).sum())


@pytest.mark.parametrize("epochs", [1, 2])
def test_curves_of_a_short_run_show_each_epoch(tmp_path, epochs):
    from ferlab.training.rundir import RunDir

    rows = [{"epoch": i + 1, "train_loss": 1.5 - 0.3 * i, "val_loss": 1.4 - 0.1 * i, "train_acc": 0.4 + 0.1 * i,
             "val_acc": 0.45 + 0.05 * i} for i in range(epochs)]
    RunDir(tmp_path).write_curves(rows)
    png = tmp_path / "curves.png"
    # each colour (train C0, validation C1): one legend handle per panel, plus what the data drew in each panel;
    # a line through one point draws nothing, so without markers a 1-epoch run shows only the two legend handles
    for colour in ("#1f77b4", "#ff7f0e"):
        assert _blobs(png, colour) >= 4, colour


# -- 5. examples/README.md says what `ferlab predict examples/` prints for no_face.png -----------------------------

def test_examples_readme_matches_predict_on_no_face(capsys):
    readme = (ROOT / "examples" / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if line.startswith("| `no_face.png`")]
    expected = row.strip("|").split("|")[-1]
    assert main(["predict", str(ROOT / "examples" / "no_face.png")]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "no_face.png" in x]
    assert "no face found" in line and "whole" not in line  # what predict prints by default...
    assert "no face found" in expected and "is classified" not in expected  # ...and what the README says
    assert "--on-no-face whole" in expected
    assert main(["predict", str(ROOT / "examples" / "no_face.png"), "--on-no-face", "whole"]) == 0
    assert "whole" in capsys.readouterr().out


# -- 6. the README says that the API's schema is at /openapi.json (the server serves it: tests/test_serving.py) ----

def test_readme_documents_openapi_json():
    readme = (ROOT / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if "`ferlab serve` →" in line]
    assert "/openapi.json" in row
    assert re.search(r"OpenAPI schema the server serves at\s+`/openapi.json`", readme)


# -- 7. the licence is an SPDX string with its file: no setuptools deprecation (builds stop 2027-02-18) ------------

def test_pyproject_licence_is_spdx_with_its_file(monkeypatch):
    import tomllib
    import warnings

    setuptools = pytest.importorskip("setuptools")  # in a Python 3.11 venv; 3.12 venvs come without it
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    patterns = project["project"]["license-files"]
    assert all(list(ROOT.glob(p)) for p in patterns) and (ROOT / "LICENSE").read_text().startswith("MIT License")
    # the SPDX string needs setuptools 77: the build requires it, and the one installed here has it
    assert "setuptools>=77" in project["build-system"]["requires"]
    assert tuple(int(x) for x in setuptools.__version__.split(".")[:2]) >= (77, 0)
    monkeypatch.chdir(ROOT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old `license = { text = "MIT" }` raises SetuptoolsDeprecationWarning
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert dist.metadata.license_expression == "MIT" and dist.metadata.license_files == ["LICENSE"]


# -- 8. `make test` installs the [video] extra (H.264 .mp4 that Chromium plays) -----------------------------------

def test_make_test_installs_every_extra_but_convert():
    import tomllib

    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    makefile = (ROOT / "Makefile").read_text()
    (spec,) = re.findall(r'pip install -q -e "\.\[([a-z,]+)\]"', makefile)
    assert "video" in spec.split(",") and set(spec.split(",")) == extras - {"convert"}
    assert re.search(r"^\$\(STAMP\):.*\bMakefile\b", makefile, re.M)  # a new extra here reinstalls .venv


def test_mp4_is_h264_with_the_video_extra(tiny, clip, tmp_path):
    pytest.importorskip("av")  # installed by `make test` (above)
    from ferlab.inference.video import process_video

    s = process_video(clip, tmp_path / "x.mp4", model=tiny)
    assert s["video_codec"] == "h264" and count_frames(tmp_path / "x.mp4") == N_FRAMES


# -- 9. `ferlab data info` on the FER+ votes file says to use --labels ferplus-* ---------------------------------

@pytest.mark.parametrize("action", ["info", "check"])
def test_data_on_the_ferplus_votes_file_hints_at_the_labels(tmp_path, capsys, action):
    from conftest import FERPLUS_VOTES

    votes = FERPLUS_VOTES
    if not votes.exists():  # the shared file, else its first rows (the header is what is recognised)
        votes = tmp_path / "fer2013new.csv"
        votes.write_text("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
                         "Training,fer0000000.png,4,0,0,1,3,2,0,0,0,0\n")
    assert main(["data", action, str(votes)]) == 2
    one_line_error(capsys.readouterr().err, str(votes), "FER+ votes file", "--labels ferplus-majority",
                   f"ferlab data {action}")
    # any other CSV that is not a dataset keeps its own message
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert main(["data", action, str(other)]) == 2
    err = capsys.readouterr().err
    assert "FER+" not in err and "missing column" in err


# -- benchmarks/README.md: a table of contents, sections by topic, every link into it resolves -------------------

def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (word characters, '-' and spaces kept),
    spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(md: str) -> set[str]:
    heads = {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", md, re.M)}
    return heads | set(re.findall(r'<a id="([^"]+)"></a>', md))


def test_benchmarks_readme_has_contents_and_topic_sections():
    md = (ROOT / "benchmarks" / "README.md").read_text()
    headings = re.findall(r"^(#{2,3}) (.+)$", md, re.M)
    assert headings[0] == ("##", "Contents")
    assert not [h for _, h in headings if re.search(r"\(issue \d+", h)]  # named by topic, not by issue
    contents = md.split("## Contents", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"\]\(#([^)]+)\)", contents)
    assert listed == [_slug(h) for _, h in headings[1:]]  # every section, in order, and nothing else
    assert len(set(listed)) == len(listed)


def test_links_into_the_benchmarks_readme_resolve():
    anchors = _anchors((ROOT / "benchmarks" / "README.md").read_text())
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    links = []
    for page in pages:
        text = page.read_text()
        links += [(page.name, a) for a in re.findall(r"benchmarks/README\.md#([\w-]+)", text)]
        if page.parent.name == "benchmarks":
            links += [(page.name, a) for a in re.findall(r"\]\(#([\w-]+)\)", text)]
    assert links and [link for link in links if link[1] not in anchors] == []
    # the anchors other pages used before the sections were renamed still lead there
    assert {"hardening-issue-13", "batch-inference-at-scale-issue-15"} <= anchors
