"""The HTTP API's routers: recognition (``POST /v1/predict``), models and health, the live stream
(``WS /v1/stream``) and the web page.  Each handler finds the ``ServingState`` on ``request.app.state``."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Literal

import anyio
import numpy as np
from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import HTTPException
from fastapi.responses import FileResponse
from starlette.types import Message

from .. import __version__
from ..errors import FerlabError
from ..inference.options import FIELD
from ..inference.records import api_face
from ..inference.video import StreamRecognizer
from .schemas import PREDICT_OPENAPI, PREDICT_RESPONSES, HealthOut, ModelsOut, PredictOut
from .state import ApiError, ServingState, api_error_of, recognise

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: longest WebSocket control (text) message read; the longest real one is ~100 characters
CONTROL_MAX_CHARS = 4096
_RAW_TYPES = ("image/", "application/octet-stream")

#: the query parameters' allowed values and descriptions: the rows of the options table (inference/options.py
#: ``FIELDS``) with what the answer shows
ON_NO_FACE_HELP = (FIELD["on_no_face"].help
                   + "; in the answer, skip gives `faces` empty and `no_face` true")
SEARCH_HELP = (FIELD["search"].help.format(where="the uploaded photo")
               + "; default: the server's (`--search`)")
OnNoFace = Literal[FIELD["on_no_face"].choices]
Search = Literal[FIELD["search"].choices]

api = APIRouter()
stream = APIRouter()
page = APIRouter()


def _state(conn) -> ServingState:
    return conn.app.state.ferlab


# --------------------------------------------------------------------------------------------- body I/O
async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes, and with 408
    when it has not all arrived ``timeout`` seconds after the headers (slow-body clients hold no slot)."""
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
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                buf += chunk
                if len(buf) > limit:
                    raise too_big
    except TimeoutError:
        raise ApiError(408, "timeout", f"request body not received within {timeout:g} s",
                       {"Connection": "close"}) from None
    return bytes(buf)


async def parse_multipart(request: Request, body: bytes) -> tuple[bytes | None, str, str | None]:
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


async def _image_of(request: Request, state: ServingState, model: str | None) -> tuple[bytes, str, str | None]:
    """(image bytes, name, model) of a predict request: a multipart field ``file`` or a raw image body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data" and not ctype.startswith(_RAW_TYPES):
        raise ApiError(415, "unsupported", f"content type {ctype[:60] or '(none)'!r} is not an image: send the "
                                           "image as multipart field 'file' or as a raw image/* body")
    body = await read_body(request, state.max_body_bytes, state.body_timeout)
    if ctype != "multipart/form-data":
        return body, "upload", model
    data, name, form_model = await parse_multipart(request, body)
    if data is None:
        raise ApiError(422, "no_file", "multipart body without a 'file' field holding the image")
    return data, name, form_model or model


# ------------------------------------------------------------------------------------------------- API
@api.post("/v1/predict", response_model=PredictOut, response_model_exclude_none=True,
          responses=PREDICT_RESPONSES, openapi_extra=PREDICT_OPENAPI, tags=["recognition"],
          summary="Faces and their expressions in one uploaded image")
async def predict(request: Request,
                  model: str | None = Query(None, description="model name (GET /v1/models); "
                                                               "default: the server's default model"),
                  on_no_face: OnNoFace = Query(
                      FIELD["on_no_face"].default, description=ON_NO_FACE_HELP),
                  search: Search | None = Query(None, description=SEARCH_HELP)):
    state = _state(request)
    if model is not None:
        state.entry(model)  # unknown model: 404 before reading the body
    with state.admit():  # 503 + Retry-After beyond capacity, before the body is read
        data, name, model = await _image_of(request, state, model)
        entry = state.entry(model)
        try:
            w, h, faces, ms = await state.run(recognise, state, entry, data, name, None, on_no_face, search)
        except FerlabError as e:
            raise api_error_of(e, entry.name) from None
    return {"model": entry.name, "faces": [api_face(f) for f in faces], "width": w, "height": h,
            "ms": round(ms, 1), "no_face": not faces or any(f.no_face for f in faces),
            "detector": str(state.detector), "search": state.search_of(search)}


@api.get("/v1/models", response_model=ModelsOut, tags=["models"], summary="The models this server offers")
async def list_models(request: Request):
    state = _state(request)
    out = []
    for e in state.entries.values():
        card = {k: v for k, v in e.card.items() if k not in ("name", "default")}
        out.append({**card, "name": e.name, "default": e.name == state.default})
    return {"default": state.default, "models": out}


@api.get("/healthz", response_model=HealthOut, tags=["service"], summary="Liveness check")
async def healthz(request: Request):
    return {"status": "ok", "version": __version__, "models": list(_state(request).entries)}


# ------------------------------------------------------------------------------------------ live stream
@stream.websocket("/v1/stream")
async def stream_endpoint(ws: WebSocket):
    """Binary messages: one compressed frame each (JPEG); text messages: JSON control
    ``{"type": "config", "model": NAME}``.  Answers one JSON text message per message received:
    ``{"type": "result", "frame", "model", "faces": [... with track_id], "width", "height", "ms"}``,
    ``{"type": "config", "model"}`` or ``{"type": "error", "status", "kind", "detail"}``.  Clients send
    the next frame after the answer to the previous one (frames are dropped, never queued).  Host and
    Origin are checked by ``HostOriginGuard``; at most ``max_streams`` streams are open at once, and a
    stream silent for ``stream_idle_timeout`` seconds is closed."""
    state = _state(ws)
    if state.streams >= state.max_streams:
        state.shed += 1
        # accepted, then closed with 1013 (try again later) and a reason: a close *before* the handshake is
        # an HTTP 403 that a browser cannot tell from a refused Origin (HostOriginGuard)
        await ws.accept()
        await ws.close(code=1013, reason="server busy: too many live streams, try again later")
        return
    state.streams += 1
    try:
        await ws.accept()
        await _stream_loop(ws, state)
    finally:
        state.streams -= 1


async def _stream_loop(ws: WebSocket, state: ServingState) -> None:
    session = StreamSession(state)
    await ws.send_text(json.dumps({"type": "hello", "model": session.entry.name, "models": list(state.entries),
                                   "max_frame_bytes": state.max_body_bytes}))
    try:
        while True:
            with anyio.move_on_after(state.stream_idle_timeout) as idle:
                msg = await ws.receive()
            if idle.cancelled_caught:
                await ws.close(code=1001, reason="idle")
                return
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("bytes") is not None:
                reply = await session.frame(msg["bytes"])
            elif msg.get("text") is not None:
                reply = session.control(msg["text"])
            else:
                continue
            await ws.send_text(json.dumps(reply))
    except WebSocketDisconnect:
        pass
    except Exception:  # a fault of the server's own: logged once, and the client gets a close frame (1011)
        logging.getLogger("uvicorn.error").exception("live stream: unexpected error; the stream is closed")
        with contextlib.suppress(Exception):  # the socket may be gone already
            await ws.close(code=1011, reason="internal error")


class StreamSession:
    """One WebSocket client: its model and its ``StreamRecognizer`` (IoU tracks, per-track moving average of
    the probabilities, full detection every ``every`` frames and a search near the last boxes in between).
    Frames of one client are processed one at a time, in order."""

    def __init__(self, state: ServingState, model: str | None = None):
        self.state = state
        self.entry = state.entry(model)
        self.frames = 0
        self.stream = None  # made with the first frame's recognizer; reset when the model changes

    def control(self, text: str) -> dict:
        """A text message: ``{"type": "config", "model": NAME}`` or ``{"type": "reset"}``; anything else is an
        error reply (too long, not JSON, nested deeper than Python's parser goes, not an object), never an
        exception that drops the socket."""
        usage = 'control messages are JSON objects like {"type": "config", "model": "default"}'
        if len(text) > CONTROL_MAX_CHARS:
            return {"type": "error", "status": 413, "kind": "too_large",
                    "detail": f"control message over {CONTROL_MAX_CHARS} characters; {usage}"}
        try:
            msg = json.loads(text)
            if not isinstance(msg, dict):
                raise ValueError
        except (ValueError, RecursionError):  # RecursionError: "[[[[...", 1,000 deep in 2 KB
            return {"type": "error", "status": 400, "kind": "bad_request", "detail": usage}
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
            with self.state.admit():
                w, h, faces, ms = await self.state.run(recognise, self.state, self.entry, data,
                                                       f"frame {self.frames}", self._step)
        except FerlabError as e:
            err = api_error_of(e, self.entry.name)
            return {"type": "error", "status": err.status, "kind": err.kind, "frame": self.frames,
                    "detail": err.detail}
        except ApiError as e:  # overloaded: the client drops this frame and sends the next one later
            return {"type": "error", "status": e.status, "kind": e.kind, "frame": self.frames, "detail": e.detail}
        return {"type": "result", "frame": self.frames, "model": self.entry.name,
                "faces": [api_face(f) for f in faces], "width": w, "height": h, "ms": round(ms, 1)}


# ---------------------------------------------------------------------------------------------- web page
@page.get("/", include_in_schema=False)
async def index():
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})
