"""``ferlab batch`` with the local engine: rows, errors, manifest, resume, exactly once, bad input.

The data is made here: 48x48 PNG crops from the FER2013 sample, the example photos, a corrupt file and
short synthetic videos (a photo sliding across the frame) written with OpenCV.  The helpers are shared with
test_batch_ray.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_models import ROOT

pytest.importorskip("pyarrow", reason="the [scale] extra (pyarrow) is not installed")

EXAMPLES = ROOT / "examples"
FERLAB = [sys.executable, "-m", "ferlab.cli"]
MODEL = "fast"  # the smallest bundled model keeps the tests quick


def make_crops(folder: Path, csv_path: Path, n: int) -> list[Path]:
    """``n`` 48x48 PNG crops from the FER2013 sample (plain, mirrored, then shifted copies of its rows)."""
    import csv

    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    with open(csv_path) as f:
        rows = [np.array(r["pixels"].split(), np.uint8).reshape(48, 48) for r in csv.DictReader(f)]
    out = []
    for i in range(n):
        img = rows[i % len(rows)]
        variant = i // len(rows)
        if variant % 2 == 1:
            img = img[:, ::-1]
        if variant >= 2:
            img = np.roll(img, variant, axis=1)
        p = folder / f"{i // 500:02d}" / f"crop_{i:05d}.png"
        p.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(p), np.ascontiguousarray(img))
        out.append(p)
    return out


def make_video(path: Path, frames: int = 40, fps: float = 10.0, size=(320, 240)) -> Path:
    """A short mp4 (mp4v) of the astronaut photo sliding across the frame."""
    import cv2

    src = cv2.imread(str(EXAMPLES / "astronaut.jpg"))
    w, h = size
    base = cv2.resize(src, (w, h))
    path.parent.mkdir(parents=True, exist_ok=True)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for i in range(frames):
        vw.write(np.roll(base, 2 * i, axis=1))
    vw.release()
    return path


def make_dataset(root: Path, fer_sample: Path, n_crops: int, n_videos: int = 2) -> dict:
    crops = make_crops(root / "crops", fer_sample, n_crops)
    photos = root / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for p in sorted(EXAMPLES.glob("*.jpg")) + sorted(EXAMPLES.glob("*.png")):
        (photos / p.name).write_bytes(p.read_bytes())
    (photos / "corrupt.jpg").write_bytes(b"\xff\xd8\xff this is not a JPEG")
    videos = [make_video(root / "videos" / f"clip{i}.mp4", frames=30 + 10 * i) for i in range(n_videos)]
    return {"root": root, "crops": crops, "photos": photos, "videos": videos}


def run_cli(*args, timeout=1800, env=None, prefix=()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *FERLAB, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=env)


def read_faces(out: Path):
    import pandas as pd

    files = sorted((out / "faces").rglob("*.parquet"))
    if not files:
        return pd.DataFrame(columns=["source", "frame", "face", "label"])
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def read_errors(out: Path):
    import pandas as pd

    files = sorted((out / "errors").rglob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame(
        columns=["source", "error_kind", "error"])


def manifest_units(out: Path) -> list[dict]:
    from ferlab.batch import read_manifest

    return read_manifest(out)


def check_exactly_once(out: Path, expected_keys: set[str] | None = None) -> None:
    """Every unit is in the manifest once; every row belongs to a committed unit and appears once; the
    manifest's face counts match the rows; no temporary or unlisted file is left."""
    units = manifest_units(out)
    keys = [u["key"] for u in units]
    assert len(keys) == len(set(keys)), "a unit was committed twice"
    if expected_keys is not None:
        assert set(keys) == expected_keys
    faces = read_faces(out)
    ident = [f"{s}|{fr}|{i}" for s, fr, i in zip(faces["source"], faces["frame"], faces["face"])]
    assert len(ident) == len(set(ident)), "a row was written twice"
    by_source = faces.groupby("source").size().to_dict()
    expect: dict[str, int] = {}
    for u in units:
        expect[u["source"]] = expect.get(u["source"], 0) + u["faces"]
    assert {k: v for k, v in expect.items() if v} == by_source
    errs = read_errors(out)
    assert sorted(errs["source"]) == sorted(u["source"] for u in units if u["status"] == "error")
    listed = set()
    for rec in (out / "_manifest").glob("part-*.json"):
        listed.update(json.loads(rec.read_text())["files"])
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
               and p.relative_to(out).parts[0] in ("faces", "errors")}
    assert on_disk == listed, "data files that no manifest record names (or the reverse)"
    assert not [p for p in out.rglob("*.tmp")], "temporary files left behind"


def labels(out: Path) -> dict:
    f = read_faces(out)
    return {(s, -1 if fr != fr else int(fr), int(i)): lab for s, fr, i, lab in
            zip(f["source"], f["frame"], f["face"], f["label"])}


def planned_keys(*inputs, segment_seconds=1.0) -> set[str]:
    from ferlab.batch import gather_paths, plan_units

    files, _ = gather_paths([str(i) for i in inputs])
    return {u.key for u in plan_units(files, segment_seconds)}


@pytest.fixture(scope="module")
def data(tmp_path_factory, fer_sample):
    return make_dataset(tmp_path_factory.mktemp("batch_data"), fer_sample, n_crops=300)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The local pool's results over the whole dataset (2 workers)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    r = run_cli("batch", data["root"], "--out", out, "--model", MODEL, "--workers", 2, "--segment-seconds", 1,
                "--part-inputs", 100, "-q")
    assert r.returncode == 0, r.stderr
    return out


def test_local_pool_rows_errors_manifest(data, reference):
    out = reference
    check_exactly_once(out, planned_keys(data["root"]))
    header = json.loads((out / "_ferlab_batch.json").read_text())
    assert header["model_name"] == MODEL and len(header["model_sha256"]) == 64
    faces = read_faces(out)
    classes = header["classes"]
    assert list(faces.columns[:14]) == ["source", "kind", "frame", "time_s", "face", "x", "y", "w", "h",
                                        "keypoints", "detection_score", "whole_image", "label", "confidence"]
    probs = faces[[f"p_{c}" for c in classes]].to_numpy()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-3)
    assert (faces["label"] == [classes[k] for k in probs.argmax(1)]).all()
    assert set(faces["model_sha256"]) == {header["model_sha256"]}
    # every crop gives exactly one face (a 48x48 image is a face crop)
    crops = faces[faces["source"].str.contains("/crops/")]
    assert crops["source"].nunique() == 300 and len(crops) == 300
    # the videos: frame numbers and timestamps, segments stitched without gap or overlap
    vids = faces[faces["kind"] == "video"]
    assert len(vids) and vids["frame"].notna().all()
    assert np.allclose(vids["time_s"], vids["frame"] / 10.0, atol=1e-3)
    units = manifest_units(out)
    for v in data["videos"]:
        segs = sorted((u["start"], u["end"]) for u in units if u["source"] == str(v.resolve()))
        assert len(segs) > 1 and segs[0][0] == 0 and segs[-1][1] == -1
        assert all(a[1] == b[0] for a, b in zip(segs, segs[1:]))
        assert sum(u["frames"] for u in units if u["source"] == str(v.resolve())) == (30 if "clip0" in v.name else 40)
    # the corrupt file is in the errors table with its reason; the job went on
    errs = read_errors(out)
    assert list(errs["source"]) == [str((data["photos"] / "corrupt.jpg").resolve())]
    assert errs["error_kind"][0] in ("unsupported", "corrupt") and "corrupt.jpg" in errs["error"][0]


def test_one_process_gives_the_same_rows(data, reference, tmp_path):
    out = tmp_path / "out"
    r = run_cli("batch", data["photos"], data["videos"][0], data["crops"][0].parent, "--out", out, "--model", MODEL,
                "--workers", 1, "--segment-seconds", 1, "-q")
    assert r.returncode == 0, r.stderr
    check_exactly_once(out)
    mine, ref = labels(out), labels(reference)
    assert mine and all(ref[k] == v for k, v in mine.items())


def test_rerun_skips_what_is_done(data, reference, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = labels(out)
    r = run_cli("batch", data["root"], "--out", out, "--model", MODEL, "--segment-seconds", 1, "-q")
    assert r.returncode == 0, r.stderr
    assert "0 input unit(s) processed" in r.stdout and "already done" in r.stderr
    assert labels(out) == before
    check_exactly_once(out)
    # an input changed since it was processed (mtime here): reported, and no second set of rows for it
    photo = data["photos"] / "astronaut.jpg"
    st = photo.stat()
    try:
        os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        r = run_cli("batch", data["root"], "--out", out, "--model", MODEL, "--segment-seconds", 1, "-q")
    finally:
        os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert r.returncode == 0, r.stderr
    assert "changed since they were processed" in r.stderr and "astronaut.jpg" in r.stderr
    assert labels(out) == before
    check_exactly_once(out)


def test_driver_killed_then_resumed_exactly_once(data, reference, tmp_path):
    """SIGKILL the driver (and its pool: the whole process group we started) after some parts are committed;
    the re-run removes the unfinished files, skips the committed units and writes the rest once."""
    out = tmp_path / "out"
    cmd = [*FERLAB, "batch", str(data["root"]), "--out", str(out), "--model", MODEL, "--workers", "2",
           "--segment-seconds", "1", "--part-inputs", "10", "--batch-size", "4", "-q"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 1800
        while time.time() < deadline and p.poll() is None:
            if len(list((out / "_manifest").glob("part-*.json"))) >= 3:
                break
            time.sleep(0.05)
        assert p.poll() is None, "the job finished before it could be killed"
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    done_before = {u["key"] for u in manifest_units(out)}
    assert 0 < len(done_before) < len(planned_keys(data["root"]))
    check_exactly_once_partial = manifest_units(out)
    assert len({u["key"] for u in check_exactly_once_partial}) == len(check_exactly_once_partial)
    r = run_cli("batch", data["root"], "--out", out, "--model", MODEL, "--workers", 2, "--segment-seconds", 1, "-q")
    assert r.returncode == 0, r.stderr
    check_exactly_once(out, planned_keys(data["root"]))
    assert labels(out) == labels(reference)


def test_csv_format(data, tmp_path):
    import pandas as pd

    out = tmp_path / "out"
    r = run_cli("batch", data["photos"], "--out", out, "--model", MODEL, "--format", "csv", "--workers", 1, "-q")
    assert r.returncode == 0, r.stderr
    faces = pd.concat([pd.read_csv(f) for f in (out / "faces").rglob("*.csv")])
    assert "keypoints" in faces.columns and len(faces) >= 1
    errs = pd.concat([pd.read_csv(f) for f in (out / "errors").rglob("*.csv")])
    assert errs["source"].str.endswith("corrupt.jpg").all()
    r2 = run_cli("batch", data["photos"], "--out", out, "--model", MODEL, "--workers", 1, "-q")
    assert r2.returncode == 2 and "format csv" in r2.stderr  # the folder holds CSV: Parquet would not mix


def test_output_folder_of_another_model_is_refused(data, reference, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    r = run_cli("batch", data["photos"], "--out", out, "--model", "default", "-q")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "model fast" in lines[0] and "another --out" in lines[0]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    # and a folder written by another ferlab version
    hdr = json.loads((out / "_ferlab_batch.json").read_text())
    hdr["ferlab_version"] = "0.0.1"
    (out / "_ferlab_batch.json").write_text(json.dumps(hdr))
    r = run_cli("batch", data["photos"], "--out", out, "--model", MODEL, "-q")
    assert r.returncode == 2 and "ferlab version 0.0.1" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_folder_with_other_files_is_refused(data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    r = run_cli("batch", data["photos"], "--out", out, "--model", MODEL, "-q")
    assert r.returncode == 2 and "not a ferlab batch output" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == [".lock", "thesis.tex"]


def test_missing_inputs_one_line(tmp_path):
    r = run_cli("batch", tmp_path / "nowhere", "--out", tmp_path / "out", "--model", MODEL, "-q")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no such file or folder" in r.stderr
    assert not (tmp_path / "out").exists()


def test_inputs_that_vanish_mid_job(data, tmp_path, monkeypatch):
    """Files deleted after the job planned them: one error row each ("missing"), the rest is written once."""
    import shutil

    import ferlab.batch.job as job

    src = tmp_path / "in"
    shutil.copytree(data["photos"], src / "photos")
    shutil.copytree(data["crops"][0].parent, src / "crops")
    shutil.copy(data["videos"][0], src / "clip.mp4")
    gone = [src / "photos" / "astronaut.jpg", *sorted((src / "crops").glob("*.png"))[:3], src / "clip.mp4"]
    real_plan = job.plan_units

    def plan_then_delete(files, seconds):
        units = real_plan(files, seconds)
        for g in gone:
            g.unlink()
        return units

    monkeypatch.setattr(job, "plan_units", plan_then_delete)
    out = tmp_path / "out"
    s = job.run([str(src)], out, model=MODEL, workers=1, segment_seconds=1.0, log=lambda m: None)
    assert s["errors"] == 1 + (len(gone) - 1) + 3  # corrupt.jpg, the deleted images, 3 segments of the video
    errs = read_errors(out)
    missing = errs[errs["error_kind"] == "missing"]
    assert {Path(s).name for s in missing["source"]} == {g.name for g in gone}
    assert all("no such file" in e for e in missing["error"])
    check_exactly_once(out)


def test_full_disk_leaves_nothing_half_written(data, tmp_path):
    """Write into a 96 kB tmpfs (its own mount namespace): the job stops with one line, every part the
    manifest names is complete and readable, no temporary file is left; copied to a roomy disk, a re-run
    finishes the job exactly once."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -m (a private mount namespace for a tiny tmpfs) is not permitted here")
    out, copy = tmp_path / "small", tmp_path / "copy"
    out.mkdir()
    script = textwrap.dedent(f"""
        set -u
        mount -t tmpfs -o size=96k tmpfs {out}
        {' '.join(FERLAB)} batch {data['crops'][0].parent} --out {out} --model {MODEL} \\
            --workers 1 --part-inputs 25 -q 2> {tmp_path}/stderr.txt
        echo "rc=$?" > {tmp_path}/rc.txt
        cp -a {out}/. {copy}/
    """)
    copy.mkdir()
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert r.returncode == 0, r.stderr
    stderr = (tmp_path / "stderr.txt").read_text().strip().splitlines()
    assert (tmp_path / "rc.txt").read_text().strip() == "rc=2", stderr
    assert len(stderr) == 1 and "disk full" in stderr[0] and "re-run" in stderr[0], stderr
    units = manifest_units(copy)
    assert units, "some parts should fit before the disk fills"
    check_exactly_once(copy)
    r = run_cli("batch", data["crops"][0].parent, "--out", copy, "--model", MODEL, "--workers", 1, "--part-inputs", 25,
                "-q")
    assert r.returncode == 0, r.stderr
    check_exactly_once(copy, planned_keys(data["crops"][0].parent))


def test_ray_engine_address_that_does_not_answer(data, tmp_path):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_cli("batch", data["photos"], "--out", tmp_path / "out", "--model", MODEL, "--engine", "ray",
                "--address", f"127.0.0.1:{port}", "-q", timeout=900)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "cannot reach the Ray cluster" in r.stderr
    assert not (tmp_path / "out").exists()


def test_predictor_for_ray_data_pipelines(data):
    """``Predictor`` is a plain callable class: a batch dict in, one row per face out (errors as rows)."""
    from ferlab.batch import Predictor, face_columns

    pred = Predictor(model=MODEL)
    paths = [str(data["photos"] / "astronaut.jpg"), str(data["photos"] / "corrupt.jpg"), str(data["crops"][0])]
    out = pred({"path": np.array(paths, dtype=object)})
    assert list(out) == [*face_columns(pred.worker.classes), "error"]
    assert out["source"][0] == paths[0] and out["error"][0] is None
    bad = [i for i, s in enumerate(out["source"]) if s == paths[1]]
    assert len(bad) == 1 and "corrupt.jpg" in out["error"][bad[0]] and out["label"][bad[0]] is None
    out2 = pred({"path": np.array(paths[2:]), "bytes": np.array([data["crops"][0].read_bytes()], dtype=object)})
    assert out2["label"][0] == out["label"][-1]


def test_batch_without_torch(data, tmp_path):
    """The batch path is inference: it must run with torch absent."""
    from test_no_torch import BLOCK_TORCH

    out = tmp_path / "out"
    code = BLOCK_TORCH + textwrap.dedent(f"""
        from ferlab.cli import main
        rc = main(["batch", {str(data['photos'])!r}, "--out", {str(out)!r}, "--model", {MODEL!r}, "--workers", "2",
                   "-q"])
        print("TORCH_LOADED", "torch" in sys.modules)
        sys.exit(rc)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert r.returncode == 0, r.stderr
    assert "TORCH_LOADED False" in r.stdout
    check_exactly_once(out)


@pytest.mark.parametrize("blocked, args, message", [
    ("ray", ["--engine", "ray", "--address", "127.0.0.1:6379"], "needs the [scale] extra"),
    ("pyarrow", [], "Parquet output needs pyarrow"),
])
def test_without_the_scale_extra_one_line(data, tmp_path, blocked, args, message):
    """A machine without the [scale] packages: one line saying what to install, exit 2, nothing written."""
    from test_no_torch import BLOCK_TORCH

    block = BLOCK_TORCH.replace('"torch"', repr(blocked)).replace('"torch."', repr(blocked + "."))
    out = tmp_path / "out"
    code = block + textwrap.dedent(f"""
        from ferlab.cli import main
        sys.exit(main(["batch", {str(data['photos'])!r}, "--out", {str(out)!r}, "--model", {MODEL!r}, "-q",
                       *{args!r}]))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr and "ferlab[scale]" in r.stderr
    assert not out.exists()


def test_a_second_job_on_the_same_folder_is_refused(data, tmp_path):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running job holds it
        r = run_cli("batch", data["photos"], "--out", out, "--model", MODEL, "-q")
    assert r.returncode == 2 and "another ferlab batch job is writing" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


@pytest.fixture(scope="module")
def small_faces(tmp_path_factory) -> Path:
    """Two photos of eight 36 px faces each: the thorough photo search finds them, the fast one does not."""
    import cv2
    from helpers_models import frame_of_faces

    folder = tmp_path_factory.mktemp("small_faces")
    for i in range(2):
        cv2.imwrite(str(folder / f"faces{i}.png"), frame_of_faces(36))
    return folder


def test_search_reaches_the_workers_and_is_recorded(small_faces, tmp_path):
    """--search thorough reaches the Recognizer of this process (--workers 1) and of the pool's worker
    processes (--workers 2, one image a task), is recorded in the job, and a re-run with another search is
    refused like any other changed option."""
    outs = {"fast": ("--workers", 1, "--search", "fast"), "thorough": ("--workers", 1, "--search", "thorough"),
            "thorough-pool": ("--workers", 2, "--batch-size", 1, "--search", "thorough")}
    faces = {}
    for name, args in outs.items():
        r = run_cli("batch", small_faces, "--out", tmp_path / name, "--model", MODEL, "-q", *args)
        assert r.returncode == 0, r.stderr
        check_exactly_once(tmp_path / name)
        faces[name] = len(read_faces(tmp_path / name))
        header = json.loads((tmp_path / name / "_ferlab_batch.json").read_text())
        assert header["options"]["search"] == name.split("-")[0]
    assert faces["fast"] <= 4 and faces["thorough"] >= 14 and faces["thorough-pool"] == faces["thorough"]
    r = run_cli("batch", small_faces, "--out", tmp_path / "thorough", "--model", MODEL, "-q")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "option search='thorough' (this run: 'balanced')" in r.stderr and "another --out" in r.stderr
    # a folder whose record predates an option is taken to hold that option's default (store.check_header):
    # it resumes with today's default search
    hp = tmp_path / "fast" / "_ferlab_batch.json"
    header = json.loads(hp.read_text())
    del header["options"]["search"]
    hp.write_text(json.dumps(header))
    r = run_cli("batch", small_faces, "--out", tmp_path / "fast", "--model", MODEL, "-q")
    assert r.returncode == 0 and "already done" in r.stderr, r.stderr
    r = run_cli("batch", small_faces, "--out", tmp_path / "bad", "--model", MODEL, "--search", "slow")
    assert r.returncode == 2 and "invalid choice: 'slow'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bad").exists()


def test_search_reaches_ray_actors_and_predictors(small_faces):
    """The Ray engine's actor class and ``Predictor`` build their Recognizer with the job's search (the
    options travel as ``BatchOptions.__dict__``, as ``_ray_dataset`` sends them)."""
    from ferlab.batch import BatchOptions, Predictor
    from ferlab.errors import FerlabError

    paths = np.array([str(small_faces / "faces0.png")], dtype=object)
    assert len(Predictor(model=MODEL, search="thorough")({"path": paths})["label"]) >= 7
    with pytest.raises(FerlabError, match="search must be one of fast, balanced, thorough"):
        BatchOptions(search="slow")
    pytest.importorskip("ray")
    from ferlab.batch.engines import RayTaskMapper

    actor = RayTaskMapper(dict(BatchOptions(model=MODEL, search="thorough").__dict__), "")
    assert actor.worker.rec.detector.search == "thorough"
