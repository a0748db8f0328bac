"""Issue 23, the defects found trying ferlab as an attacker would (10, 11, 12, 14, 15, 16) and the one input
walker (item 3).

Every command runs in a subprocess with a generous timeout (a command that blocks or reads without end
fails the test instead of hanging the suite) and, where a defect ate memory, an address-space limit.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_models import ROOT

EXAMPLES = ROOT / "examples"
FERLAB = [sys.executable, "-m", "ferlab.cli"]
MODEL = "fast"  # the smallest bundled model keeps the tests quick


def _limit_memory() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))  # a reader without end dies, the box lives


def run_cli(*args, timeout: float = 300, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*FERLAB, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          preexec_fn=_limit_memory, stdin=subprocess.DEVNULL)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], err[-2000:])
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


@pytest.fixture
def fifo_jpg(tmp_path) -> Path:
    p = tmp_path / "fifo" / "x.jpg"
    p.parent.mkdir()
    os.mkfifo(p)
    return p


# ------------------------------------------------------------------------------- 10: devices, FIFOs, sizes
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_predict_refuses_a_device_in_one_line(device):
    err = one_line_error(run_cli("predict", device, "--model", MODEL, timeout=180))
    assert device in err and "regular file" in err


def test_predict_refuses_a_fifo_named_like_an_image(fifo_jpg):
    err = one_line_error(run_cli("predict", fifo_jpg, "--model", MODEL, timeout=180))
    assert "x.jpg" in err and "regular file" in err


def test_read_image_refuses_what_is_not_a_regular_file(fifo_jpg):
    from ferlab.imageio import ImageError, read_file, read_image

    for p in ("/dev/zero", fifo_jpg):  # opened non-blocking, refused from fstat: returns at once
        with pytest.raises(ImageError, match="regular file") as e:
            read_image(p)
        assert e.value.kind == "unsupported"
    with pytest.raises(ImageError, match="folder"):
        read_file(fifo_jpg.parent)


def test_read_file_never_reads_more_than_the_limit(tmp_path):
    from ferlab.imageio import ImageError, read_file

    # a /proc file is regular and says it holds 0 bytes: the limit is enforced on what is read
    assert os.stat("/proc/self/status").st_size == 0
    with pytest.raises(ImageError, match="limit") as e:
        read_file("/proc/self/status", limit=16)
    assert e.value.kind == "too_large"
    p = tmp_path / "eleven.bin"
    p.write_bytes(b"x" * 11)
    with pytest.raises(ImageError, match="too large"):
        read_file(p, limit=10)
    assert read_file(p, limit=11) == b"x" * 11


def test_folders_skip_fifos_in_predict_batch_and_datasets(fifo_jpg, tmp_path):
    """A FIFO named like an image inside a folder is not listed (predict, batch, photo folders): nothing blocks."""
    pytest.importorskip("pyarrow", reason="the [scale] extra (pyarrow) is not installed")
    shutil.copy(EXAMPLES / "astronaut.jpg", fifo_jpg.parent / "astronaut.jpg")
    r = run_cli("predict", fifo_jpg.parent, "--model", MODEL, "--no-progress", timeout=300)
    assert r.returncode == 0 and "astronaut.jpg" in r.stdout and "x.jpg" not in r.stdout + r.stderr, r.stderr
    r = run_cli("batch", fifo_jpg.parent, "--out", tmp_path / "out", "--model", MODEL, "--workers", "1", "-q",
                "--format", "csv", timeout=300)
    assert r.returncode == 0 and "1 input unit(s) processed" in r.stdout and "0 error(s)" in r.stdout, r.stderr

    from ferlab.data.folders import load_folder

    cls = tmp_path / "photos" / "happy"
    cls.mkdir(parents=True)
    shutil.copy(EXAMPLES / "no_face.png", cls / "a.png")
    os.mkfifo(cls / "b.png")
    ds = load_folder(tmp_path / "photos")  # the FIFO is neither read nor counted
    assert len(ds.labels) == 1 and not any("skipped" in w for w in ds.warnings)


def test_batch_refuses_an_explicit_fifo_in_one_line(fifo_jpg, tmp_path):
    err = one_line_error(run_cli("batch", fifo_jpg, "--out", tmp_path / "out", "--model", MODEL, "-q",
                                 "--format", "csv", timeout=180))
    assert "regular file" in err and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ 16: refused options
@pytest.mark.parametrize("origin", ["not a url", "*", "https://app.example/path", "ftp://app.example",
                                    "http://app.example:99999", "https://app.example/?q=1"])
def test_serve_refuses_an_allowed_origin_that_is_no_origin(origin):
    """Refused by the parser, before the models load or the port is bound."""
    err = one_line_error(run_cli("serve", "--allowed-origin", origin, "--port", "1", timeout=120))
    assert "--allowed-origin" in err and "origin" in err


def test_serve_accepts_real_origins():
    from ferlab.commands.serve import origin_url

    assert origin_url("https://app.example/") == "https://app.example"
    assert origin_url("http://localhost:8000") == "http://localhost:8000"
    assert origin_url("http://[::1]:8080") == "http://[::1]:8080"


@pytest.mark.parametrize("option", ["--json", "--csv"])
@pytest.mark.parametrize("value", ["", " "])
def test_predict_refuses_an_empty_output_name(option, value, tmp_path):
    err = one_line_error(run_cli("predict", EXAMPLES / "astronaut.jpg", "--model", MODEL, option, value,
                                 cwd=tmp_path, timeout=180))
    assert option in err and "empty" in err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------- 12: batch options checked up front
def _broken_model(folder: Path) -> Path:
    """An .onnx that is not a model, with a card whose sha256 and size match it (so only loading fails)."""
    import hashlib

    from ferlab.zoo import ZOO_DIR

    onnx = folder / "broken.onnx"
    onnx.write_bytes((ZOO_DIR / f"{MODEL}.onnx").read_bytes()[:1000])
    card = json.loads((ZOO_DIR / f"{MODEL}.json").read_text())
    card.update(name="broken", sha256=hashlib.sha256(onnx.read_bytes()).hexdigest(), onnx_bytes=1000)
    onnx.with_suffix(".json").write_text(json.dumps(card))
    return onnx


@pytest.mark.parametrize("bad", ["detector", "model"])
def test_batch_checks_detector_and_model_before_workers_or_writes(bad, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut.jpg", "two_faces.jpg"):
        shutil.copy(EXAMPLES / name, photos / name)
    opts = ["--detector", "bogus", "--model", MODEL] if bad == "detector" else ["--model", _broken_model(tmp_path)]
    out = tmp_path / "out"
    err = one_line_error(run_cli("batch", photos, "--out", out, *opts, "--workers", "2", "--format", "csv", "-q"))
    assert ("unknown face detector 'bogus'" in err) if bad == "detector" else ("cannot load the ONNX model" in err)
    assert "worker" not in err and not out.exists()  # nothing written: the folder can be used as it is
    r = run_cli("batch", photos, "--out", out, "--model", MODEL, "--workers", "2", "--format", "csv", "-q")
    assert r.returncode == 0 and "2 input unit(s) processed" in r.stdout, r.stderr


# ----------------------------------------------------------------- 11: pool workers die with their driver
def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie is dead: a container's PID 1 may never reap what it inherits)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_the_batch_driver_ends_its_workers(tmp_path):
    import signal
    import time

    pytest.importorskip("pyarrow", reason="the [scale] extra (pyarrow) is not installed")
    photos = tmp_path / "photos"
    photos.mkdir()
    src = photos / "p0000.jpg"
    shutil.copy(EXAMPLES / "two_faces.jpg", src)
    for i in range(1, 1500):  # enough work that the job is still running when it is killed
        os.link(src, photos / f"p{i:04d}.jpg")
    out = tmp_path / "out"
    driver = subprocess.Popen([*FERLAB, "batch", str(photos), "--out", str(out), "--model", MODEL, "--workers", "2",
                               "--batch-size", "2", "--part-inputs", "2", "--format", "csv", "-q"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                              start_new_session=True)
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # until the workers have committed results (they are up and working)
            children |= set(_children(driver.pid))
            if driver.poll() is not None:
                pytest.fail(f"the job ended (rc {driver.returncode}) before it could be killed: give it more work")
            if (out / "faces").exists() and any((out / "faces").rglob("*.csv")) and len(children) >= 3:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the batch job did not commit a part within 300 s")
        children |= set(_children(driver.pid))
        workers = [p for p in children if "spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
        assert len(workers) >= 2, children
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
        deadline = time.monotonic() + 60  # they end at once (parent-death signal); 60 s for a loaded machine
        while time.monotonic() < deadline and any(_alive(p) for p in children):
            time.sleep(0.2)
        left = [p for p in children if _alive(p)]
        assert not left, f"processes of the killed driver still running: {left}"
        # nobody holds the caller's stdout pipe any more: reading it ends
        assert driver.stdout.read() is not None
    finally:
        for p in [driver.pid, *children]:
            if _alive(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        driver.stdout.close()


# ------------------------------------------------------------------- 14, 15: the WebSocket, hostile clients
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from helpers_models import make_exported_tiny_model

    folder = tmp_path_factory.mktemp("models")
    make_exported_tiny_model(folder)
    return folder


def _app(models, **kw):
    from ferlab.serving import create_app

    return create_app(models, "tiny", workers=1, threads=1, detector="none", **kw)


@pytest.fixture
def real_server(tiny_models):
    """A factory: the app on a real uvicorn server on 127.0.0.1 (a context manager yielding the port)."""
    from helpers_models import serve_in_thread

    from ferlab.serving.app import uvicorn_options

    def start(**kw):
        return serve_in_thread(_app(tiny_models, **kw), **uvicorn_options())

    return start


class _Records:
    """Records of uvicorn's error logger (added after the server configured its logging)."""

    def __enter__(self):
        import logging

        self.records: list = []
        self.handler = logging.Handler()
        self.handler.emit = self.records.append
        logging.getLogger("uvicorn.error").addHandler(self.handler)
        return self.records

    def __exit__(self, *exc):
        import logging

        logging.getLogger("uvicorn.error").removeHandler(self.handler)


def test_ws_deeply_nested_control_message_is_an_error_reply(tiny_models):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    with TestClient(_app(tiny_models), base_url="http://localhost") as c:
        with c.websocket_connect("ws://localhost/v1/stream") as ws:
            assert ws.receive_json()["type"] == "hello"
            ws.send_text("[" * 1000 + "]" * 1000)  # 2 KB: RecursionError in json.loads
            reply = ws.receive_json()
            assert reply["type"] == "error" and reply["kind"] == "bad_request" and reply["status"] == 400
            ws.send_text('{"a": ' * 5000 + "1" + "}" * 5000)  # over the length limit: not even parsed
            reply = ws.receive_json()
            assert reply["type"] == "error" and reply["kind"] == "too_large"
            ws.send_text(json.dumps({"type": "config", "model": "tiny"}))  # the socket still works
            assert ws.receive_json() == {"type": "config", "model": "tiny"}


def test_ws_nested_json_and_invalid_utf8_on_a_real_server(real_server):
    pytest.importorskip("websockets")
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with real_server() as port, _Records() as records:
        url = f"ws://127.0.0.1:{port}/v1/stream"
        with connect(url, open_timeout=60) as ws:
            ws.recv(timeout=60)
            ws.send("[" * 1000 + "]" * 1000)
            assert '"bad_request"' in ws.recv(timeout=60)
        with connect(url, open_timeout=60) as ws:
            ws.recv(timeout=60)
            ws.send(b"\xff\xfe{not utf-8", text=True)
            with pytest.raises(ConnectionClosed) as e:
                ws.recv(timeout=60)
            assert e.value.rcvd is not None and e.value.rcvd.code == 1007
        assert records and not [r for r in records if r.exc_info or r.levelname == "ERROR"], \
            [(r.levelname, r.getMessage()) for r in records]
        assert any("UTF-8" in r.getMessage() for r in records)


def _handshake(port: int, host: str, origin: str | None = None) -> tuple[str, dict, bytes]:
    """A raw WebSocket handshake: (status line, headers, body) of the answer."""
    import socket

    req = (f"GET /v1/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           + (f"Origin: {origin}\r\n" if origin else "") + "\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(req.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            part = s.recv(65536)
            if not part:
                break
            data += part
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        want = int(headers.get("content-length", 0))
        while len(body) < want:
            part = s.recv(65536)
            if not part:
                break
            body += part
    return lines[0], headers, body


def test_ws_refusals_are_json_and_busy_is_not_forbidden(real_server):
    pytest.importorskip("websockets")
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    with real_server(max_streams=1) as port:
        status, headers, body = _handshake(port, "attacker.example")  # DNS rebinding: 421 as the README says
        assert status.split()[1] == "421" and headers["content-type"].startswith("application/json"), status
        assert json.loads(body)["kind"] == "host_not_allowed" and json.loads(body)["detail"]
        status, headers, body = _handshake(port, f"127.0.0.1:{port}", origin="http://evil.example")
        assert status.split()[1] == "403" and json.loads(body)["kind"] == "origin_not_allowed", (status, body)
        url = f"ws://127.0.0.1:{port}/v1/stream"
        with pytest.raises(InvalidStatus) as e:
            connect(url, origin="http://evil.example", open_timeout=60)
        assert e.value.response.status_code == 403
        with connect(url, open_timeout=60) as first:
            assert json.loads(first.recv(timeout=60))["type"] == "hello"
            # the 9th stream of 8 (here the 2nd of 1): accepted, then closed with 1013 "try again later"
            with connect(url, open_timeout=60) as second:
                with pytest.raises(ConnectionClosed) as e:
                    second.recv(timeout=60)
            assert e.value.rcvd is not None and e.value.rcvd.code == 1013 and "busy" in e.value.rcvd.reason


# ------------------------------------------------------------------------------- item 3: one input walker
def test_one_walker_files_folders_globs_lists(tmp_path):
    from ferlab.imageio import IMAGE_SUFFIXES, folder_files, walk_inputs

    root = tmp_path / "in"
    for rel in ("b.jpg", "a/z.png", "a/y.PNG", "a/.hidden.jpg", ".dot/x.jpg", "c/notes.txt", "c/clip.mp4"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    os.mkfifo(root / "a" / "fifo.jpg")
    os.symlink(root / "b.jpg", root / "c" / "link.jpg")  # a link to a regular file is one (listed once)
    os.symlink(root / "gone.jpg", root / "c" / "broken.jpg")  # a broken link is not

    files, other = folder_files(root, IMAGE_SUFFIXES)  # os.walk order: a folder's files, then its folders
    assert [p.relative_to(root).as_posix() for p in files] == ["b.jpg", "a/y.PNG", "a/z.png", "c/link.jpg"]
    assert other == 2  # notes.txt, clip.mp4: regular files that are not images; the FIFO is not counted

    found, problems = walk_inputs([str(root)], sort_folders=True)  # predict: sorted by path, each file once
    assert [p.relative_to(root).as_posix() for p, _ in found] == ["a/y.PNG", "a/z.png", "b.jpg"]
    assert all(r == root for _, r in found) and problems == []

    lst = tmp_path / "list.txt"
    lst.write_text("# inputs\nin/c/clip.mp4\n\nin/b.jpg\n/dev/zero\nin/missing.jpg\n")
    found, problems = walk_inputs([str(root / "a" / "z.png"), str(root / "a" / "fifo.jpg"), str(root / "*.jpg"),
                                   str(tmp_path / "nothing*.png"), str(root / "c" / "notes.txt")],
                                  IMAGE_SUFFIXES | {".mp4"}, list_files=[str(lst)], noun="images or videos")
    assert [p.relative_to(root).as_posix() for p, _ in found] == ["a/z.png", "b.jpg", "c/notes.txt", "c/clip.mp4"]
    msgs = [m for _, m in problems]
    assert len(msgs) == 4 and "fifo.jpg: not a regular file" in msgs[0] and "/dev/zero: not a regular file" in msgs[2]
    assert msgs[1].endswith("no image or video files match this pattern") and "no such file" in msgs[3]


def test_list_file_is_bounded_and_one_line(tmp_path):
    from ferlab.errors import FerlabError
    from ferlab.imageio import read_list_file

    with pytest.raises(FerlabError, match="list file not found"):
        read_list_file(tmp_path / "none.txt")
    with pytest.raises(FerlabError, match="cannot read the list file"):
        read_list_file(tmp_path)
    bad = tmp_path / "bin.txt"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(FerlabError, match="cannot read the list file"):
        read_list_file(bad)
    with pytest.raises(FerlabError, match="larger than"):  # a device never ends: read up to the limit, refused
        read_list_file("/dev/zero")


def test_ws_server_fault_closes_with_1011_not_a_dropped_socket(tiny_models, monkeypatch):
    import warnings

    from ferlab.serving.routes import StreamSession

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    def broken(self, text):
        raise RuntimeError("a bug")

    monkeypatch.setattr(StreamSession, "control", broken)
    with TestClient(_app(tiny_models), base_url="http://localhost") as c:
        with c.websocket_connect("ws://localhost/v1/stream") as ws:
            assert ws.receive_json()["type"] == "hello"
            ws.send_text("{}")
            msg = ws.receive()
            assert msg["type"] == "websocket.close" and msg["code"] == 1011
