"""HTTP API, WebSocket stream and ``ferlab serve``: in-process (TestClient) and against a real uvicorn."""

from __future__ import annotations

import io
import json
import re
import socket
import struct
import threading
import warnings
import zlib
from pathlib import Path

import pytest
from helpers_images import ASTRONAUT, PNG_SIGNATURE, face_photo, png_bytes, png_chunk
from helpers_models import make_exported_tiny_model, serve_in_thread

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

with warnings.catch_warnings():  # starlette's TestClient may warn about httpx vs httpx2 at import
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from ferlab.labels import FER2013_CLASSES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
WS_URL = "ws://localhost/v1/stream"  # TestClient's default host "testserver" is not one the server answers to


# ------------------------------------------------------------------------------------------- helpers
def face_jpeg() -> bytes:
    """A photo with one face Haar finds: the astronaut example, else a padded, upscaled FER2013 face."""
    if ASTRONAUT.exists():
        return ASTRONAUT.read_bytes()
    import cv2

    return cv2.imencode(".jpg", face_photo())[1].tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR claiming ``width`` x ``height`` (no pixel data: nothing allocated)."""
    return (PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 16)))


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    make_exported_tiny_model(folder)
    return folder


@pytest.fixture(scope="module")
def app(models_dir):
    from ferlab.serving import create_app

    return create_app(models_dir, "tiny", workers=2, threads=1)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url="http://localhost") as c:  # Host must be one the server answers to
        yield c


@pytest.fixture(scope="module")
def face() -> bytes:
    return face_jpeg()


def assert_alive(client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def assert_face_result(body: dict, model: str = "tiny") -> None:
    assert body["model"] == model
    assert body["width"] > 0 and body["height"] > 0 and body["ms"] >= 0
    assert body["faces"], body
    f = body["faces"][0]
    assert f["whole_image"] is False
    x, y, w, h = f["box"]
    assert w > 20 and h > 20 and 0 <= x < body["width"] and 0 <= y < body["height"]
    assert f["label"] in FER2013_CLASSES
    assert set(f["probabilities"]) == set(FER2013_CLASSES)
    assert abs(sum(f["probabilities"].values()) - 1) < 1e-3
    assert f["confidence"] == pytest.approx(max(f["probabilities"].values()), abs=1e-4)
    assert "track_id" not in f  # only the stream tracks faces


# --------------------------------------------------------------------------------------- endpoints
ROOT_EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_healthz(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["models"] == ["tiny"] and body["version"]


def test_models_list(client):
    r = client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["default"] == "tiny"
    (m,) = body["models"]
    assert m["name"] == "tiny" and m["default"] is True
    assert m["classes"] == list(FER2013_CLASSES) and m["input_size"] == 48


def test_predict_multipart(client, face):
    r = client.post("/v1/predict", files={"file": ("face.jpg", face, "image/jpeg")})
    assert r.status_code == 200, r.text
    assert_face_result(r.json())


def test_predict_raw_body_and_model_parameter(client, face):
    r = client.post("/v1/predict?model=tiny", content=face, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert_face_result(r.json())
    # octet-stream raw bodies are sniffed from the bytes; a PNG without a face -> the whole image
    r = client.post("/v1/predict", content=png_bytes(), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (64, 48)
    assert body["faces"][0]["whole_image"] is True and body["faces"][0]["box"] == [0, 0, 64, 48]


def test_predict_no_face_no_label_and_on_no_face_whole(client):
    import cv2

    landscape = (ROOT_EXAMPLES / "no_face.png").read_bytes()
    r = client.post("/v1/predict", content=landscape, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["faces"] == [] and body["no_face"] is True and body["detector"] == "blazeface"
    r = client.post("/v1/predict?on_no_face=whole", content=landscape, headers={"Content-Type": "image/png"})
    body = r.json()
    assert body["no_face"] is True and len(body["faces"]) == 1 and body["faces"][0]["whole_image"] is True
    assert client.post("/v1/predict?on_no_face=guess", content=landscape,
                       headers={"Content-Type": "image/png"}).status_code == 422
    ok, astro = cv2.imencode(".jpg", cv2.imread(str(ROOT_EXAMPLES / "astronaut.jpg")))
    body = client.post("/v1/predict", content=astro.tobytes(), headers={"Content-Type": "image/jpeg"}).json()
    assert body["no_face"] is False and len(body["faces"][0]["keypoints"]) == 6


def test_predict_search_query(client):
    """?search= chooses the photo search per request: 36 px faces are found by the thorough one only (the
    server's default, balanced, looks for faces from ~40 px)."""
    import cv2
    from helpers_models import frame_of_faces

    ok, small = cv2.imencode(".jpg", frame_of_faces(36), [cv2.IMWRITE_JPEG_QUALITY, 95])
    headers = {"Content-Type": "image/jpeg"}
    fast = client.post("/v1/predict", content=small.tobytes(), headers=headers).json()
    assert fast["search"] == "balanced" and len(fast["faces"]) <= 2
    thorough = client.post("/v1/predict?search=thorough", content=small.tobytes(), headers=headers).json()
    assert thorough["search"] == "thorough" and len(thorough["faces"]) >= 7
    bad = client.post("/v1/predict?search=slow", content=small.tobytes(), headers=headers)
    assert bad.status_code == 422 and bad.json()["kind"] == "bad_request" and "search" in bad.json()["detail"]


def test_server_search_default(models_dir):
    from ferlab.serving import create_app

    app = create_app(models_dir, "tiny", workers=1, threads=1, recognizer_options={"search": "thorough"})
    assert app.state.ferlab.search_of(None) == "thorough" and app.state.ferlab.search_of("fast") == "fast"
    assert create_app(models_dir, "tiny", detector="haar").state.ferlab.search_of("fast") is None


def test_predict_model_form_field(client, face):
    r = client.post("/v1/predict", data={"model": "tiny"}, files={"file": ("f.jpg", face, "image/jpeg")})
    assert r.status_code == 200
    r = client.post("/v1/predict", data={"model": "nope"}, files={"file": ("f.jpg", face, "image/jpeg")})
    assert r.status_code == 404 and r.json()["kind"] == "unknown_model"


def test_unknown_model_404(client, face):
    r = client.post("/v1/predict?model=missing", content=face, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 404
    assert "missing" in r.json()["detail"] and "tiny" in r.json()["detail"]
    # a model parameter is a name, never a path on the server
    r = client.post("/v1/predict", params={"model": str(ROOT / "src/ferlab/zoo/default.onnx")}, content=face,
                    headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 404
    assert_alive(client)


def test_body_over_limit_413(client):
    big = b"\xff\xd8" + b"\0" * (10 * 2**20)
    r = client.post("/v1/predict", content=big, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 413 and r.json()["kind"] == "too_large"
    r = client.post("/v1/predict", files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413
    assert_alive(client)


def test_body_counted_without_content_length(client):
    """A chunked body (no Content-Length) is counted as it streams."""
    def chunks():
        for _ in range(12):
            yield b"\0" * 2**20

    r = client.post("/v1/predict", content=chunks(), headers={"Content-Type": "image/png"})
    assert r.status_code == 413
    assert_alive(client)


def test_non_image_415(client):
    r = client.post("/v1/predict", content=b"just text", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["kind"] == "unsupported"
    r = client.post("/v1/predict", content=b"%PDF-1.4 not an image", headers={"Content-Type": "image/png"})
    assert r.status_code == 415
    r = client.post("/v1/predict", files={"file": ("notes.txt", b"hello world", "text/plain")})
    assert r.status_code == 415
    r = client.post("/v1/predict", json={"image": "https://example.com/a.jpg"})
    assert r.status_code == 415  # no URLs, no JSON: only uploaded bytes
    assert_alive(client)


def test_format_outside_allow_list_415(client):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 100, 50)).save(buf, "ICO")
    r = client.post("/v1/predict", content=buf.getvalue(), headers={"Content-Type": "image/x-icon"})
    assert r.status_code == 415
    assert "ICO" in r.json()["detail"]
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, "TGA")
    r = client.post("/v1/predict", files={"file": ("x.tga", buf.getvalue(), "image/x-tga")})
    assert r.status_code == 415
    assert_alive(client)


def test_megapixels_413_from_header(client):
    header = png_header_only(10_000, 5_000)  # 50 MP claimed in ~60 bytes
    assert len(header) < 100
    r = client.post("/v1/predict", content=header, headers={"Content-Type": "image/png"})
    assert r.status_code == 413
    assert "megapixel" in r.json()["detail"]
    assert_alive(client)


def test_truncated_and_empty_400(client, face):
    r = client.post("/v1/predict", content=face[: len(face) // 2], headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 400 and r.json()["kind"] == "corrupt"
    assert "truncated" in r.json()["detail"]
    png = png_bytes(200, 200)
    r = client.post("/v1/predict", files={"file": ("cut.png", png[:-40], "image/png")})
    assert r.status_code == 400 and "cut.png" in r.json()["detail"]
    r = client.post("/v1/predict", content=b"", headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 400 and r.json()["kind"] == "empty"
    assert_alive(client)


def test_missing_file_field_and_bad_multipart(client):
    r = client.post("/v1/predict", data={"model": "tiny"}, files={"other": ("a.txt", b"x", "text/plain")})
    assert r.status_code == 422 and r.json()["kind"] == "no_file"
    r = client.post("/v1/predict", content=b"--zzz\r\ngarbage", headers={"Content-Type": "multipart/form-data"})
    assert r.status_code in (400, 422)
    assert_alive(client)


def test_server_keeps_serving_after_errors(client, face):
    bad = [(b"", "image/jpeg"), (b"text", "text/plain"), (face[:300], "image/jpeg"),
           (png_header_only(8000, 8000), "image/png")]
    for data, ctype in bad * 3:
        assert client.post("/v1/predict", content=data, headers={"Content-Type": ctype}).status_code >= 400
    r = client.post("/v1/predict", content=face, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200
    assert_face_result(r.json())


def test_openapi_documents_paths_and_errors(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/models", "/healthz"} <= set(spec["paths"])
    post = spec["paths"]["/v1/predict"]["post"]
    assert {"200", "400", "404", "413", "415"} <= set(post["responses"])
    content = post["requestBody"]["content"]
    assert "multipart/form-data" in content and "image/jpeg" in content
    assert "file" in content["multipart/form-data"]["schema"]["properties"]
    assert any(p["name"] == "model" for p in post["parameters"])
    assert "ErrorOut" in spec["components"]["schemas"]


def test_web_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    html = r.text
    assert "/static/app.js" in html and "/static/style.css" in html
    assert "never stored" in html  # the privacy note
    external = re.compile(r"https?://(?!localhost\b|127\.0\.0\.1\b)")  # no CDN, nothing from the internet
    assert not external.search(html)
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    for name in ("app.js", "style.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200
        assert not external.search(r.text), name
    assert client.get("/static/../app.py").status_code == 404


# ---------------------------------------------------------------------------------------- WebSocket
def test_websocket_stream_tracks_faces(client, face):
    with client.websocket_connect(WS_URL) as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello" and hello["model"] == "tiny"
        ws.send_text(json.dumps({"type": "config", "model": "tiny"}))
        assert ws.receive_json() == {"type": "config", "model": "tiny"}
        ids = []
        for i in range(5):
            ws.send_bytes(face)
            msg = ws.receive_json()
            assert msg["type"] == "result" and msg["frame"] == i + 1, msg
            if i < 2:  # a track is shown once confirmed, at its third detection
                assert msg["faces"] == [], msg
                continue
            assert msg["faces"], msg
            f = msg["faces"][0]
            assert len(f["keypoints"]) == 6
            assert f["label"] in FER2013_CLASSES and f["whole_image"] is False
            assert isinstance(f["track_id"], int)
            assert abs(sum(f["probabilities"].values()) - 1) < 1e-3
            ids.append(f["track_id"])
        assert len(set(ids)) == 1, ids  # one face, one track


def test_websocket_errors_do_not_end_the_stream(client, face):
    with client.websocket_connect(WS_URL) as ws:
        ws.receive_json()
        ws.send_text(json.dumps({"type": "config", "model": "nope"}))
        msg = ws.receive_json()
        assert msg["type"] == "error" and msg["status"] == 404
        ws.send_text("not json")
        assert ws.receive_json()["status"] == 400
        ws.send_bytes(b"garbage frame")
        msg = ws.receive_json()
        assert msg["type"] == "error" and msg["status"] == 415
        ws.send_bytes(face[:400])
        assert ws.receive_json()["status"] == 400
        for _ in range(3):  # the stream goes on: the face is shown once its track is confirmed
            ws.send_bytes(face)
            msg = ws.receive_json()
        assert msg["type"] == "result" and msg["faces"]


def test_websocket_rejects_foreign_origin(client):
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect(WS_URL, headers={"Origin": "https://evil.example"}) as ws:
            ws.receive_json()
    with client.websocket_connect(WS_URL, headers={"Origin": "http://localhost"}) as ws:
        assert ws.receive_json()["type"] == "hello"


# ------------------------------------------------------------------------------------- app factory
def test_create_app_model_sources(models_dir):
    from ferlab.errors import FerlabError
    from ferlab.serving.app import collect_models, create_app

    (e,) = collect_models(models_dir / "tiny.onnx")
    assert e.name == "tiny"
    (e,) = collect_models({"mine": str(models_dir / "tiny.onnx")})
    assert e.name == "mine"
    app = create_app({"mine": str(models_dir / "tiny.onnx")})  # "default" absent -> the first model
    assert app.state.ferlab.default == "mine"
    with pytest.raises(FerlabError, match="not among"):
        create_app(models_dir, "other")
    with pytest.raises(FerlabError, match="unknown model"):
        create_app([str(models_dir / "missing.onnx")])
    with pytest.raises(FerlabError, match="named 'tiny'"):
        create_app([models_dir, models_dir / "tiny.onnx"])
    empty = models_dir / "empty"
    empty.mkdir(exist_ok=True)
    with pytest.raises(FerlabError, match="no .onnx"):
        create_app(empty)


def test_small_body_limit_configurable(models_dir, face):
    from ferlab.serving import create_app

    with TestClient(create_app(models_dir, max_body_bytes=1000), base_url="http://localhost") as c:
        r = c.post("/v1/predict", content=face, headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 413
        assert c.post("/v1/predict", content=png_bytes(8, 8), headers={"Content-Type": "image/png"}).status_code == 200


# --------------------------------------------------------------------------------- real uvicorn run
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(models_dir):
    from ferlab.serving import create_app

    # its own app: one event loop per app; a queue long and patient enough that these tests, about
    # concurrency and bodies, never meet load shedding on a loaded machine (tests/test_hardening_serving.py)
    app = create_app(models_dir, "tiny", workers=2, threads=1, max_queue=64, queue_timeout=3600)

    with serve_in_thread(app, timeout=20) as port:
        yield f"127.0.0.1:{port}"


def _raw_request(hostport: str, head: bytes, body_chunks, timeout: float = 10) -> tuple[int, bytes]:
    """Send a request by hand and return (status, raw response); stops sending once the server answers."""
    host, port = hostport.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head)
        sent = 0
        try:
            for chunk in body_chunks:
                s.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                part = s.recv(65536)
                if not part:
                    break
                data += part
        except (ConnectionResetError, TimeoutError):
            pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


def test_real_server_chunked_body_refused_while_streaming(live_server):
    """Chunked upload of 12 MB with no Content-Length: 413 without the server buffering it all."""
    import httpx

    def chunked():
        for _ in range(12 * 4):
            piece = b"\0" * (256 * 1024)
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b"0\r\n\r\n"

    head = (f"POST /v1/predict HTTP/1.1\r\nHost: {live_server}\r\nContent-Type: image/jpeg\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    status, raw = _raw_request(live_server, head, chunked())
    assert status == 413, raw[:300]
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: {live_server}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {50 * 2**20}\r\n\r\n").encode()
    status, raw = _raw_request(live_server, head, [])  # refused from the header: nothing sent at all
    assert status == 413, raw[:300]
    r = httpx.get(f"http://{live_server}/healthz", timeout=10)
    assert r.status_code == 200


def test_real_server_concurrent_requests(live_server, face):
    import httpx

    results = []

    def worker():
        with httpx.Client(timeout=60) as c:
            for _ in range(3):
                r = c.post(f"http://{live_server}/v1/predict", content=face, headers={"Content-Type": "image/jpeg"})
                results.append(r.status_code)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == [200] * 12
    r = httpx.get(f"http://{live_server}/healthz", timeout=5)  # the event loop was never blocked for long
    assert r.status_code == 200


# -------------------------------------------------------------------------------------------- CLI
def test_cli_serve_parses_and_warns_beyond_loopback(models_dir, monkeypatch, capsys):
    import uvicorn

    from ferlab.cli import main
    from ferlab.commands.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    port = free_port()
    assert main(["serve", "--model", str(models_dir / "tiny.onnx"), "--port", str(port)]) == 0
    app, kw = calls[-1]
    assert kw["host"] == "127.0.0.1" and kw["port"] == port
    assert app.state.ferlab.default == "tiny"
    assert "warning" not in capsys.readouterr().err
    assert main(["serve", "--model", str(models_dir / "tiny.onnx"), "--host", "0.0.0.0", "--port", str(port)]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0]


def test_cli_serve_user_errors_are_one_line(models_dir, monkeypatch, capsys):
    import uvicorn

    from ferlab.cli import main

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    assert main(["serve", "--model", str(models_dir / "nothing.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ferlab serve: error:") and "\n" not in err
    assert main(["serve", "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown model 'no-such-model'" in err and "\n" not in err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        taken = s.getsockname()[1]
        assert main(["serve", "--model", str(models_dir / "tiny.onnx"), "--port", str(taken)]) == 2
        err = capsys.readouterr().err.strip()
        assert "cannot listen" in err and "\n" not in err
