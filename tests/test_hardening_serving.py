"""Issue 13, the server: DNS rebinding, cross-origin posts, overload, slow clients, hostile images.

Every test talks to 127.0.0.1 only.  Nothing here depends on timing beyond generous bounds: load shedding
is made deterministic by holding the only worker on an event, and the timeouts under test are set short
(0.5 s) while the assertions allow many seconds.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import warnings

import pytest
from helpers_images import png_bytes, strip_png
from helpers_models import make_exported_tiny_model, serve_in_thread

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
BASE = "http://localhost"
WS = "ws://localhost/v1/stream"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    make_exported_tiny_model(folder)
    return folder


def make_client(models_dir, **kw) -> TestClient:
    from ferlab.serving import create_app

    kw.setdefault("workers", 2)
    kw.setdefault("threads", 1)
    return TestClient(create_app(models_dir, "tiny", **kw), base_url=BASE)


@pytest.fixture(scope="module")
def client(models_dir):
    with make_client(models_dir, detector="none") as c:
        yield c


def post_png(c, data=None, **headers):
    return c.post("/v1/predict", content=png_bytes() if data is None else data,
                  headers={"Content-Type": "image/png", **headers})


# ------------------------------------------------------------------------------- DNS rebinding (Host)
@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "localhost.attacker.example",
                                  "127.0.0.1.nip.io"])
def test_foreign_host_refused(client, host):
    r = client.get("/healthz", headers={"Host": host})
    assert r.status_code == 421 and r.json()["kind"] == "host_not_allowed"
    r = post_png(client, Host=host)
    assert r.status_code == 421


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "10.1.2.3"])
def test_own_hosts_accepted(client, host):
    assert client.get("/healthz", headers={"Host": host}).status_code == 200


def test_allowed_host_option(models_dir):
    with make_client(models_dir, allowed_hosts=["ferlab.lan"]) as c:
        assert c.get("/healthz", headers={"Host": "ferlab.lan:8000"}).status_code == 200
        assert c.get("/healthz", headers={"Host": "other.lan"}).status_code == 421


def test_websocket_with_foreign_host_and_origin_refused(client):
    """Refused over HTTP before the handshake (ASGI WebSocket denial response): 421 / 403 and JSON."""
    from starlette.testclient import WebSocketDenialResponse

    with pytest.raises(WebSocketDenialResponse) as e:
        with client.websocket_connect("ws://attacker.example/v1/stream",
                                      headers={"Origin": "http://attacker.example"}) as ws:
            ws.receive_json()
    assert e.value.status_code == 421 and e.value.json()["kind"] == "host_not_allowed"
    with pytest.raises(WebSocketDenialResponse) as e:
        with client.websocket_connect(WS, headers={"Origin": "http://attacker.example"}) as ws:
            ws.receive_json()
    assert e.value.status_code == 403 and e.value.json()["kind"] == "origin_not_allowed"


# ------------------------------------------------------------------------------ cross-origin (Origin)
@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://localhost.evil.example",
                                    "http://localhost:9999"])
def test_cross_origin_posts_refused_whatever_the_content_type(client, origin):
    for ctype, body in [("image/png", png_bytes()), ("text/plain", b"x"), ("application/octet-stream", png_bytes())]:
        r = client.post("/v1/predict", content=body, headers={"Content-Type": ctype, "Origin": origin})
        assert r.status_code == 403, (origin, ctype, r.text)
        assert r.json()["kind"] == "origin_not_allowed"
    r = client.post("/v1/predict", files={"file": ("a.png", png_bytes(), "image/png")}, headers={"Origin": origin})
    assert r.status_code == 403


def test_same_origin_and_allowed_origin_accepted(models_dir):
    with make_client(models_dir, detector="none", allowed_origins=["https://app.example"]) as c:
        assert post_png(c, Origin="http://localhost").status_code == 200
        assert post_png(c, Origin="https://app.example/").status_code == 200
        assert post_png(c, Origin="https://other.example").status_code == 403
        with c.websocket_connect(WS, headers={"Origin": "https://app.example"}) as ws:
            assert ws.receive_json()["type"] == "hello"


# ------------------------------------------------------------------------------------- hostile images
@pytest.mark.parametrize("w,h,status,kind", [(1, 65535, 413, "too_large"), (400000, 1, 413, "too_large"),
                                             (20000, 1, 413, "too_large"), (3000, 20, 422, "bad_shape")])
def test_strip_uploads_answer_json_4xx_fast(client, w, h, status, kind):
    r = post_png(client, strip_png(w, h))  # refused from the header: unfixed, a 20000x1 strip took 7.7 s of CPU
    assert (r.status_code, r.json()["kind"]) == (status, kind), r.text
    assert client.get("/healthz").status_code == 200


def test_near_cap_upload_is_decoded_reduced_and_boxes_mapped_back(client):
    r = post_png(client, strip_png(6000, 5000))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (6000, 5000)  # the uploaded image's size, not the reduced one
    assert body["faces"][0]["box"] == [0, 0, 6000, 5000]


def test_recognition_failure_is_json_422_not_500(models_dir, monkeypatch):
    import cv2

    from ferlab.inference.recognizer import Recognizer

    def boom(self, crops):
        raise cv2.error("OpenCV(4.x) (-4:Insufficient memory) Failed to allocate 160000000000 bytes")

    monkeypatch.setattr(Recognizer, "classify", boom)
    with make_client(models_dir, detector="none") as c:
        r = post_png(c)
        assert r.status_code == 422 and r.json()["kind"] == "recognition", r.text
        assert "Insufficient memory" in r.json()["detail"]
        with c.websocket_connect(WS) as ws:
            ws.receive_json()
            ws.send_bytes(png_bytes())
            msg = ws.receive_json()
            assert msg["type"] == "error" and msg["status"] == 422


def test_bad_query_is_json(client):
    r = client.post("/v1/predict?model=" + "x" * 5000, content=png_bytes(), headers={"Content-Type": "image/png"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")


# ------------------------------------------------------------------------------------- load shedding
@contextlib.contextmanager
def held_worker(monkeypatch):
    """Replace the recognition step by one that waits on an event: the worker stays busy until released."""
    from ferlab.serving import routes

    started, release = threading.Event(), threading.Event()
    real = routes.recognise

    def slow(*args, **kwargs):
        started.set()
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(routes, "recognise", slow)
    try:
        yield started, release
    finally:
        release.set()


def test_overload_answers_503_with_retry_after_at_once(models_dir, monkeypatch):
    with make_client(models_dir, detector="none", workers=1, max_queue=0) as c, \
            held_worker(monkeypatch) as (started, release):
        first: dict = {}
        t = threading.Thread(target=lambda: first.update(r=post_png(c)))
        t.start()
        assert started.wait(30)
        r = post_png(c)  # answered while the first one still holds the worker: at once, not after it
        assert r.status_code == 503 and r.json()["kind"] == "overloaded", r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert not release.is_set() and t.is_alive()
        assert c.get("/healthz").status_code == 200  # cheap endpoints still answer
        with c.websocket_connect(WS) as ws:  # a stream frame is dropped with a 503 error message
            ws.receive_json()
            ws.send_bytes(png_bytes())
            assert ws.receive_json()["status"] == 503
        release.set()
        t.join(60)
        assert first["r"].status_code == 200
        assert post_png(c).status_code == 200  # capacity is back
        assert c.app.state.ferlab.pending == 0 and c.app.state.ferlab.shed >= 2


def test_queue_wait_is_bounded(models_dir, monkeypatch):
    """A request admitted to the queue but not served within queue_timeout gets 503 (its work never runs)."""
    with make_client(models_dir, detector="none", workers=1, max_queue=1, queue_timeout=0.5) as c, \
            held_worker(monkeypatch) as (started, release):
        t = threading.Thread(target=lambda: post_png(c))
        t.start()
        assert started.wait(30)
        r = post_png(c)
        assert r.status_code == 503 and "Retry-After" in r.headers
        release.set()
        t.join(60)


def test_limits_are_checked(models_dir):
    from ferlab.errors import FerlabError
    from ferlab.serving import create_app

    for bad in ({"workers": 0}, {"max_body_bytes": float("nan")}, {"max_queue": -1}, {"body_timeout": 0},
                {"max_body_bytes": 1e30}, {"threads": 100000}):
        with pytest.raises(FerlabError):
            create_app(models_dir, **bad)


# ------------------------------------------------------------------------------------ WebSocket caps
def test_websocket_cap_and_idle_timeout(models_dir):
    from starlette.websockets import WebSocketDisconnect

    with make_client(models_dir, detector="none", max_streams=2, stream_idle_timeout=3600) as c:
        with c.websocket_connect(WS) as a, c.websocket_connect(WS) as b:
            a.receive_json()
            b.receive_json()
            with pytest.raises(WebSocketDisconnect) as e:
                with c.websocket_connect(WS) as third:
                    third.receive_json()
            assert e.value.code == 1013
            assert c.app.state.ferlab.streams == 2
        with c.websocket_connect(WS) as again:  # slots are freed on close
            assert again.receive_json()["type"] == "hello"
    with make_client(models_dir, detector="none", stream_idle_timeout=0.5) as c:
        with c.websocket_connect(WS) as idle:
            idle.receive_json()
            msg = idle.receive()  # the server closes a silent stream
            assert msg["type"] == "websocket.close" and msg["code"] == 1001
        deadline = time.time() + 120
        while c.app.state.ferlab.streams and time.time() < deadline:
            time.sleep(0.05)
        assert c.app.state.ferlab.streams == 0


# -------------------------------------------------------------------------------- slow clients (real)
def real_server(app, header_timeout: float):
    """The app on a real uvicorn server with ferlab's own options (the header timeout among them)."""
    from ferlab.serving.app import uvicorn_options

    return serve_in_thread(app, **uvicorn_options(header_timeout=header_timeout))


def _closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing ``sock`` (None if it was still open after ``seconds``)."""
    sock.settimeout(seconds)
    data = b""
    try:
        while True:
            part = sock.recv(4096)
            if not part:
                return data
            data += part
    except TimeoutError:
        return None
    except ConnectionResetError:
        return data


def test_half_sent_headers_and_slow_bodies_are_cut(models_dir):
    import httpx

    from ferlab.serving import create_app

    app = create_app(models_dir, "tiny", workers=1, threads=1, detector="none", body_timeout=0.5)
    with real_server(app, header_timeout=0.5) as port:
        socks = []
        for _ in range(50):  # half-sent headers (slowloris)
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            socks.append(s)
        slow_body = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow_body.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                          b"Content-Length: 100000\r\n\r\n" + b"\x89PNG")
        try:
            answers = [_closed_within(s, 120) for s in socks]
            assert all(a is not None for a in answers), "a half-sent request was kept open"
            assert all(a.startswith(b"HTTP/1.1 408") for a in answers if a)
            body_answer = _closed_within(slow_body, 120)
            assert body_answer is not None and b" 408 " in body_answer.split(b"\r\n")[0], body_answer
            r = httpx.post(f"http://127.0.0.1:{port}/v1/predict", content=png_bytes(),
                           headers={"Content-Type": "image/png"}, timeout=30)
            assert r.status_code == 200  # served normally meanwhile
        finally:
            for s in [*socks, slow_body]:
                s.close()


def test_cli_serve_passes_the_limits(models_dir, monkeypatch):
    import uvicorn

    from ferlab.cli import main

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["serve", "--model", str(models_dir / "tiny.onnx"), "--port", str(port), "--allowed-host",
                 "ferlab.lan", "--max-queue", "3", "--max-streams", "5", "--header-timeout", "4",
                 "--body-timeout", "6"]) == 0
    app, kw = calls[-1]
    st = app.state.ferlab
    assert (st.max_queue, st.max_streams, st.body_timeout) == (3, 5, 6.0)
    assert "ferlab.lan" in st.allowed_hosts and kw["http"].header_timeout == 4.0


@pytest.mark.parametrize("argv", [["--max-body-mb", "nan"], ["--max-body-mb", "1e30"], ["--workers", "0"],
                                  ["--port", "0"], ["--smoothing", "2"], ["--max-queue", "-1"]])
def test_cli_serve_numbers_one_line(argv, capsys):
    from ferlab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ferlab serve: error: argument") and "\n" not in err


def test_openapi_lists_the_new_statuses(client):
    spec = client.get("/openapi.json").json()
    responses = spec["paths"]["/v1/predict"]["post"]["responses"]
    assert {"403", "408", "421", "503"} <= set(responses)
    assert json.dumps(spec)  # serialisable
