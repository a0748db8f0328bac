"""The HTTP API and the local web page.

``create_app()`` builds a FastAPI app that serves:

- ``POST /v1/predict``  one uploaded image (multipart field ``file`` or a raw ``image/*`` body) -> faces;
- ``GET /v1/models``    the models this server offers, with their cards;
- ``GET /healthz``      liveness;
- ``WS /v1/stream``     live frames (JPEG binary messages) -> tracked, smoothed faces per frame;
- ``GET /``             the web page (webcam and photo modes), from ``static/``, no CDN.

Only uploaded bytes are ever decoded (through ``ferlab.imageio``, the one place that decodes untrusted
images); a ``model`` parameter is a name looked up among the served models, never a path.  Limits:
bodies over ``max_body_bytes`` (10 MB) -> 413 (checked from Content-Length and by counting the streamed
bytes), images over 40 megapixels -> 413 (read from the header, before decoding), non-images and formats
outside the allow-list -> 415, empty / truncated / malformed images -> 400, unknown model -> 404.
Inference runs in worker threads (at most ``workers`` at a time) so the event loop keeps answering;
``Recognizer`` instances are cached per model (a small pool, one per concurrent worker).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import numpy as np
from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import HTTPException
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import FerlabError
from ..imageio import ALLOWED_FORMATS, MAX_PIXELS, ImageError, decode_image

log = logging.getLogger("ferlab.serving")

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 10 * 1024 * 1024
#: ImageError.kind -> HTTP status
_STATUS_OF_KIND = {"empty": 400, "corrupt": 400, "missing": 400, "unsupported": 415, "too_large": 413}
_RAW_TYPES = ("image/", "application/octet-stream")


# ----------------------------------------------------------------------------------------------- schemas
class ErrorOut(BaseModel):
    detail: str = Field(description="what went wrong, in one line")
    kind: str = Field(description="machine-readable reason: too_large, unsupported, corrupt, empty, "
                                  "unknown_model, no_file, bad_request, internal")


class FaceOut(BaseModel):
    box: list[int] = Field(description="x, y, width, height in pixels of the uploaded image")
    label: str = Field(description="most probable expression")
    confidence: float = Field(description="probability of the label (calibrated with the card's temperature)")
    probabilities: dict[str, float] = Field(description="probability of every class of the model")
    whole_image: bool = Field(description="true when no face was found and the whole image was classified")
    track_id: int | None = Field(None, description="stable id of a face across frames (stream only)")


class PredictOut(BaseModel):
    model: str = Field(description="name of the model that answered")
    faces: list[FaceOut]
    width: int = Field(description="image width in pixels (after EXIF rotation)")
    height: int
    ms: float = Field(description="server time spent decoding and recognising, milliseconds")


class ModelOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    classes: list[str]
    input_size: int
    default: bool = False


class ModelsOut(BaseModel):
    default: str
    models: list[ModelOut]


class HealthOut(BaseModel):
    status: str
    version: str
    models: list[str]


def _err(description: str) -> dict:
    return {"model": ErrorOut, "description": description}


_PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _err("empty, truncated or malformed image, or a malformed request body"),
    404: _err("unknown model name (see GET /v1/models)"),
    413: _err(f"request body over the size limit ({MAX_BODY_BYTES // 2**20} MB by default), or an image over "
              f"{MAX_PIXELS / 1e6:.0f} megapixels (refused from its header, before decoding)"),
    415: _err("not an image, or an image format outside the allow-list "
              f"({', '.join(sorted(ALLOWED_FORMATS))})"),
    422: _err("multipart body without a 'file' field"),
    500: _err("unexpected server error (the server keeps running)"),
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_PREDICT_OPENAPI = {
    "requestBody": {
        "required": True,
        "description": "The image, either as the multipart field `file` (with an optional `model` field) or "
                       "as the raw request body with an image content type. Only the uploaded bytes are used.",
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary", "description": "the image"},
                               "model": {"type": "string", "description": "model name (overrides ?model=)"}}}},
            **{t: _BINARY for t in ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif",
                                    "image/tiff", "image/x-portable-pixmap", "application/octet-stream")},
        },
    }
}


# ------------------------------------------------------------------------------------------------ errors
class ApiError(Exception):
    def __init__(self, status: int, kind: str, detail: str):
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


def _error_response(status: int, kind: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "kind": kind}, status_code=status, headers=headers)


# ------------------------------------------------------------------------------------------------ models
@dataclass
class ModelEntry:
    """A served model: ``name`` clients use, ``source`` given to the Recognizer (bundled name or path)."""

    name: str
    source: str
    card: dict


def _entry_from_onnx(path: Path) -> ModelEntry:
    from ..zoo import read_card

    card = read_card(path.with_suffix(".json"))
    return ModelEntry(str(card.get("name") or path.stem), str(path), card)


def collect_models(models: Any = None) -> list[ModelEntry]:
    """Served models from: None (the bundled ones), a folder of ``.onnx`` + card pairs, an ``.onnx`` path,
    a bundled name, a list of any of those, or a mapping ``name -> bundled name or .onnx path``."""
    from ..zoo import bundled_names, list_bundled

    if models is None:
        return [ModelEntry(c["name"], c["name"], {k: v for k, v in c.items() if k != "name"}) for c in list_bundled()]
    if isinstance(models, Mapping):
        out = []
        for name, src in models.items():
            e = collect_models([src])[0]
            out.append(ModelEntry(str(name), e.source, e.card))
        return out
    if isinstance(models, (str, os.PathLike)):
        models = [models]
    out: list[ModelEntry] = []
    bundled = set(bundled_names())
    for item in models:
        text = str(item)
        p = Path(text)
        if text in bundled:
            from ..zoo import ZOO_DIR, read_card

            out.append(ModelEntry(text, text, read_card(ZOO_DIR / f"{text}.json")))
        elif p.is_dir():
            found = sorted(q for q in p.glob("*.onnx") if q.with_suffix(".json").exists())
            if not found:
                raise FerlabError(f"{p}: no .onnx model with its .json card in this folder")
            out.extend(_entry_from_onnx(q) for q in found)
        elif p.suffix == ".onnx" and p.is_file():
            out.append(_entry_from_onnx(p))
        else:
            known = ", ".join(sorted(bundled)) or "none bundled"
            raise FerlabError(f"unknown model {text!r}: not a bundled model ({known}), an .onnx file or a folder")
    seen: set[str] = set()
    for e in out:
        if e.name in seen:
            raise FerlabError(f"two served models are named {e.name!r}: give them distinct names")
        seen.add(e.name)
    return out


class _RecognizerPool:
    """Recognizers of one model, created on demand and reused (never more than the concurrent workers)."""

    def __init__(self, factory):
        self.factory = factory
        self.idle: queue.SimpleQueue = queue.SimpleQueue()
        self.created = 0
        self.lock = threading.Lock()

    def acquire(self):
        try:
            return self.idle.get_nowait()
        except queue.Empty:
            pass
        with self.lock:
            rec = self.factory()
            self.created += 1
        return rec

    def release(self, rec) -> None:
        self.idle.put(rec)


@dataclass
class ServingState:
    entries: dict[str, ModelEntry]
    default: str
    detector: str
    workers: int
    threads: int
    max_body_bytes: int
    recognizer_options: dict = field(default_factory=dict)
    stream_every: int = 3
    stream_smoothing: float = 0.6
    pools: dict[str, _RecognizerPool] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _limiter: Any = None

    def entry(self, name: str | None) -> ModelEntry:
        name = name or self.default
        e = self.entries.get(name)
        if e is None:
            shown = name if len(name) <= 60 else name[:57] + "..."
            raise ApiError(404, "unknown_model", f"unknown model {shown!r}; served models: "
                                                 f"{', '.join(self.entries)}")
        return e

    def pool(self, entry: ModelEntry) -> _RecognizerPool:
        with self.lock:
            p = self.pools.get(entry.name)
            if p is None:
                from ..inference.recognizer import Recognizer

                opts = dict(self.recognizer_options)

                def factory(src=entry.source, opts=opts):
                    return Recognizer(model=src, detector=self.detector, threads=self.threads, **opts)

                p = self.pools[entry.name] = _RecognizerPool(factory)
            return p

    @property
    def limiter(self):
        if self._limiter is None:  # created lazily: it must belong to the running event loop's backend
            self._limiter = anyio.CapacityLimiter(self.workers)
        return self._limiter

    async def run(self, fn, *args):
        """Run blocking ``fn(*args)`` in a worker thread; at most ``workers`` at a time."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)


def _face_json(face) -> dict:
    """A ``Face`` as the API shows it (``track_id`` only for tracked faces)."""
    d = face.to_dict()
    out = {k: d[k] for k in ("box", "label", "confidence", "probabilities", "whole_image")}
    if d.get("track_id") is not None:
        out["track_id"] = int(d["track_id"])
    return out


def _recognise(state: ServingState, entry: ModelEntry, data: bytes, name: str,
               step=None) -> tuple[int, int, list, float]:
    """Decode (via imageio) and recognise; runs in a worker thread.  ``step(recognizer, image) -> faces``
    replaces ``recognizer.predict`` (the stream tracks faces across frames)."""
    t0 = time.perf_counter()
    pool = state.pool(entry)
    rec = pool.acquire()
    try:
        # grey is all the Haar detector and the classifier need; colour only for detectors that use it
        image = decode_image(data, name=name, mode="bgr" if getattr(rec, "_needs_color", True) else "gray")
        faces = rec.predict(image) if step is None else step(rec, image)
    finally:
        pool.release(rec)
    h, w = image.shape[:2]
    return w, h, faces, (time.perf_counter() - t0) * 1000.0


# --------------------------------------------------------------------------------------------- body I/O
async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    too_big = ApiError(413, "too_large", f"request body over the {limit / 2**20:.0f} MB limit")
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, "bad_request", "invalid Content-Length header") from None
        if declared > limit:
            raise too_big
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise too_big
    return bytes(buf)


async def _parse_multipart(request: Request, body: bytes) -> tuple[bytes | None, str, str | None]:
    """(file bytes or None, file name, model field) of an already size-checked multipart body."""
    done = False

    async def replay() -> Message:
        nonlocal done
        if done:
            return {"type": "http.disconnect"}
        done = True
        return {"type": "http.request", "body": body, "more_body": False}

    req = Request(request.scope, replay)
    try:
        form = await req.form(max_files=1, max_fields=8, max_part_size=64 * 1024)
    except HTTPException as e:
        raise ApiError(400, "bad_request", f"malformed multipart body: {e.detail}") from None
    except Exception as e:  # noqa: BLE001 - python-multipart raises assorted errors on garbage
        raise ApiError(400, "bad_request", f"malformed multipart body ({type(e).__name__})") from None
    try:
        upload = form.get("file")
        model = form.get("model")
        model = model if isinstance(model, str) and model else None
        if upload is None or isinstance(upload, str):
            return None, "upload", model
        data = await upload.read()
        name = Path(upload.filename or "upload").name[:100] or "upload"
        return data, name, model
    finally:
        await form.close()


# ------------------------------------------------------------------------------------------- middleware
class _SecurityHeaders:
    """Pure ASGI middleware: conservative security headers on every HTTP response."""

    HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"permissions-policy", b"camera=(self), microphone=(), geolocation=()"),
        (b"content-security-policy",
         b"default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
         b"connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
         b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    ]

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in self.HEADERS if k not in names]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _same_origin(origin: str, host: str | None) -> bool:
    try:
        return bool(host) and urlsplit(origin).netloc.lower() == host.lower()
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------- factory
def create_app(models: Any = None, default_model: str = "default", *, detector: str = "haar",
               workers: int | None = None, threads: int | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               allowed_origins: Iterable[str] = (), recognizer_options: dict | None = None,
               stream_every: int = 3, stream_smoothing: float = 0.6, preload: bool = False) -> FastAPI:
    """The FastAPI app.

    models: None (the bundled models), a models folder, an ``.onnx`` path, a bundled name, a list of
        those, or a mapping name -> source (see ``collect_models``).
    default_model: the model used when a request names none; ``"default"`` falls back to the first served
        model when no model of that name is served.
    workers: concurrent inferences (default: the number of CPU cores, at most 4); each Recognizer gets
        ``threads`` ONNX Runtime threads (default: cores / workers).
    allowed_origins: extra browser origins allowed to open the WebSocket (same-origin is always allowed).
    stream_every, stream_smoothing: the WebSocket stream runs the full face detector every N frames (a search
        near the last boxes in between) and averages each track's probabilities with this weight of the past.
    preload: load the default model now (its errors surface here, and the first request is not slowed).
    """
    from .. import __version__

    entries = collect_models(models)
    if not entries:
        raise FerlabError("no models to serve: none is bundled yet; give one with --model PATH.onnx "
                          "(exported by `ferlab export`) or --models-dir DIR")
    by_name = {e.name: e for e in entries}
    if default_model not in by_name:
        if default_model == "default":
            default_model = entries[0].name
        else:
            raise FerlabError(f"default model {default_model!r} is not among the served models "
                              f"({', '.join(by_name)})")
    if int(stream_every) < 1 or not 0 <= float(stream_smoothing) < 1:
        raise FerlabError(f"stream_every must be >= 1 and stream_smoothing in [0, 1) "
                          f"(got {stream_every}, {stream_smoothing})")
    cores = os.cpu_count() or 1
    workers = max(1, int(workers or min(cores, 4)))
    threads = max(1, int(threads or cores // workers))
    state = ServingState(by_name, default_model, detector, workers, threads, int(max_body_bytes),
                         dict(recognizer_options or {}), int(stream_every), float(stream_smoothing))
    origins = {o.rstrip("/").lower() for o in allowed_origins}
    if preload:
        pool = state.pool(state.entry(None))
        pool.release(pool.acquire())

    app = FastAPI(
        title="ferlab",
        version=__version__,
        summary="Facial expression recognition: faces and their expressions in uploaded images and live frames.",
        description=(
            "Images are processed in memory on this machine and never stored. Errors answer "
            "`{\"detail\": ..., \"kind\": ...}`.\n\n"
            "**Live stream** (WebSocket, not listed below): `GET /v1/stream` upgraded to a WebSocket. The server "
            "first sends `{\"type\": \"hello\", \"model\", \"models\", \"max_frame_bytes\"}`. Send each frame as "
            "one binary message (a JPEG) and wait for its answer before sending the next (drop frames, never "
            "queue them): `{\"type\": \"result\", \"frame\", \"model\", \"faces\": [{box, label, confidence, "
            "probabilities, whole_image, track_id}], \"width\", \"height\", \"ms\"}` with faces tracked across "
            "frames (stable `track_id`) and probabilities smoothed per track. A text message "
            "`{\"type\": \"config\", \"model\": NAME}` switches the model (answer `{\"type\": \"config\"}`); bad "
            "frames and unknown models answer `{\"type\": \"error\", \"status\", \"kind\", \"detail\"}` and the "
            "stream goes on. Browsers may connect only from this server's own pages (same origin)."),
        docs_url=None,  # Swagger UI loads from a CDN; this server works offline (the schema: /openapi.json)
        redoc_url=None,
    )
    app.state.ferlab = state
    app.add_middleware(_SecurityHeaders)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        headers = {"Connection": "close"} if exc.status == 413 else None
        return _error_response(exc.status, exc.kind, exc.detail, headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return _error_response(exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))

    # ---- API
    @app.post("/v1/predict", response_model=PredictOut, response_model_exclude_none=True,
              responses=_PREDICT_RESPONSES,
              openapi_extra=_PREDICT_OPENAPI, tags=["recognition"],
              summary="Faces and their expressions in one uploaded image")
    async def predict(request: Request,
                      model: str | None = Query(None, description="model name (GET /v1/models); "
                                                                   "default: the server's default model")):
        if model is not None:
            state.entry(model)  # unknown model: 404 before reading the body
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "multipart/form-data" and not ctype.startswith(_RAW_TYPES):
            raise ApiError(415, "unsupported", f"content type {ctype or '(none)'!r} is not an image: send the "
                                               "image as multipart field 'file' or as a raw image/* body")
        body = await _read_body(request, state.max_body_bytes)
        if ctype == "multipart/form-data":
            data, name, form_model = await _parse_multipart(request, body)
            if data is None:
                raise ApiError(422, "no_file", "multipart body without a 'file' field holding the image")
            model = form_model or model
        else:
            data, name = body, "upload"
        entry = state.entry(model)
        try:
            w, h, faces, ms = await state.run(_recognise, state, entry, data, name)
        except ImageError as e:
            raise ApiError(_STATUS_OF_KIND.get(e.kind, 400), e.kind, str(e)) from None
        except FerlabError as e:
            log.error("model %s: %s", entry.name, e)
            raise ApiError(500, "internal", f"model {entry.name!r} cannot run: {e}") from None
        return {"model": entry.name, "faces": [_face_json(f) for f in faces], "width": w, "height": h,
                "ms": round(ms, 1)}

    @app.get("/v1/models", response_model=ModelsOut, tags=["models"], summary="The models this server offers")
    async def list_models():
        out = []
        for e in state.entries.values():
            card = {k: v for k, v in e.card.items() if k not in ("name", "default")}
            out.append({**card, "name": e.name, "default": e.name == state.default})
        return {"default": state.default, "models": out}

    @app.get("/healthz", response_model=HealthOut, tags=["service"], summary="Liveness check")
    async def healthz():
        return {"status": "ok", "version": __version__, "models": list(state.entries)}

    # ---- live stream
    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket):
        """Binary messages: one compressed frame each (JPEG); text messages: JSON control
        ``{"type": "config", "model": NAME}``.  Answers one JSON text message per message received:
        ``{"type": "result", "frame", "model", "faces": [... with track_id], "width", "height", "ms"}``,
        ``{"type": "config", "model"}`` or ``{"type": "error", "status", "kind", "detail"}``.  Clients send
        the next frame after the answer to the previous one (frames are dropped, never queued)."""
        origin = ws.headers.get("origin")
        if origin and not (_same_origin(origin, ws.headers.get("host")) or origin.rstrip("/").lower() in origins):
            await ws.close(code=1008)
            return
        await ws.accept()
        session = _StreamSession(state)
        await ws.send_text(json.dumps({"type": "hello", "model": session.entry.name, "models": list(state.entries),
                                       "max_frame_bytes": state.max_body_bytes}))
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                if msg.get("bytes") is not None:
                    reply = await session.frame(msg["bytes"])
                elif msg.get("text") is not None:
                    reply = session.control(msg["text"])
                else:
                    continue
                await ws.send_text(json.dumps(reply))
        except WebSocketDisconnect:
            pass

    # ---- web page
    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


class _StreamSession:
    """One WebSocket client: its model and its ``StreamRecognizer`` (IoU tracks, per-track moving average of
    the probabilities, full detection every ``every`` frames and a search near the last boxes in between).
    Frames of one client are processed one at a time, in order."""

    def __init__(self, state: ServingState, model: str | None = None):
        self.state = state
        self.entry = state.entry(model)
        self.frames = 0
        self.stream = None  # made with the first frame's recognizer; reset when the model changes

    def control(self, text: str) -> dict:
        try:
            msg = json.loads(text)
            if not isinstance(msg, dict):
                raise ValueError
        except ValueError:
            return {"type": "error", "status": 400, "kind": "bad_request",
                    "detail": 'control messages are JSON objects like {"type": "config", "model": "default"}'}
        if "model" in msg:
            try:
                entry = self.state.entry(str(msg["model"]) if msg["model"] else None)
            except ApiError as e:
                return {"type": "error", "status": e.status, "kind": e.kind, "detail": e.detail}
            if entry.name != self.entry.name:
                self.entry, self.stream = entry, None
        if msg.get("type") == "reset":
            self.stream = None
        return {"type": "config", "model": self.entry.name}

    def _step(self, rec, image: np.ndarray) -> list:
        from ..inference.video import StreamRecognizer

        if self.stream is None:
            self.stream = StreamRecognizer(rec, every=self.state.stream_every, smoothing=self.state.stream_smoothing)
        self.stream.rec = rec  # any pooled Recognizer of this model: the tracks live in the StreamRecognizer
        return self.stream.process(image)

    async def frame(self, data: bytes) -> dict:
        self.frames += 1
        if len(data) > self.state.max_body_bytes:
            return {"type": "error", "status": 413, "kind": "too_large", "frame": self.frames,
                    "detail": f"frame over the {self.state.max_body_bytes / 2**20:.0f} MB limit"}
        try:
            w, h, faces, ms = await self.state.run(_recognise, self.state, self.entry, data,
                                                   f"frame {self.frames}", self._step)
        except ImageError as e:
            return {"type": "error", "status": _STATUS_OF_KIND.get(e.kind, 400), "kind": e.kind,
                    "frame": self.frames, "detail": str(e)}
        except FerlabError as e:
            return {"type": "error", "status": 500, "kind": "internal", "frame": self.frames, "detail": str(e)}
        return {"type": "result", "frame": self.frames, "model": self.entry.name,
                "faces": [_face_json(f) for f in faces], "width": w, "height": h, "ms": round(ms, 1)}
