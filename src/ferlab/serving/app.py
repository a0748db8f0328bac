"""The HTTP API and the local web page.

``create_app()`` builds a FastAPI app that serves:

- ``POST /v1/predict``  one uploaded image (multipart field ``file`` or a raw ``image/*`` body) -> faces;
- ``GET /v1/models``    the models this server offers, with their cards;
- ``GET /healthz``      liveness;
- ``WS /v1/stream``     live frames (JPEG binary messages) -> tracked, smoothed faces per frame;
- ``GET /``             the web page (webcam and photo modes), from ``static/``, no CDN;
- ``GET /models.json``, ``GET /models/{name}.onnx``  the models for the page's own pipeline (``assets``: the page
  runs detection, crops, the classifier and tracking on the device with the vendored onnxruntime-web; the
  static files are served gzip-compressed with cache headers, every response cross-origin isolated).

Only uploaded bytes are ever decoded (through ``ferlab.imageio``, the one place that decodes untrusted
images); a ``model`` parameter is a name looked up among the served models, never a path.  Limits:
bodies over ``max_body_bytes`` (10 MB) -> 413 (checked from Content-Length and by counting the streamed
bytes), images over 40 megapixels -> 413 (read from the header, before decoding), non-images and formats
outside the allow-list -> 415, empty / truncated / malformed images -> 400, strips (more elongated than
50:1) and images the detector cannot process -> 422, unknown model -> 404.  Every error is JSON
``{"detail", "kind"}``.
Inference runs in worker threads (at most ``workers`` at a time) so the event loop keeps answering;
``Recognizer`` instances are cached per model (a small pool, one per concurrent worker).

Hostile clients (issue 13): Host and Origin are checked (``middleware.HostOriginGuard``: 421 / 403); at
most ``workers`` + ``max_queue`` requests are admitted, the rest get 503 with ``Retry-After`` at once, and
one that waits ``queue_timeout`` s for a worker gets 503 too; request headers must arrive within
``header_timeout`` s (``middleware.header_timeout_protocol``) and bodies within ``body_timeout`` s (408);
at most ``max_streams`` WebSockets are open and an idle one is closed; uploads are decoded reduced to
``decode_max_side`` and detection and cropping are bounded (``ferlab.inference.recognizer``), so one
request costs at most about 1.5 s of CPU and 300 MB whatever 10 MB it sends (tests/test_hardening_serving.py).

Layout: ``schemas`` (pydantic models), ``state`` (served models, Recognizer pools, admission, the
recognition step), ``middleware``, ``routes`` (routers: API, live stream, web page) and this factory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError

from .. import __version__
from ..errors import FerlabError
from . import assets, routes
from .assets import CompressedStatic, IsolationHeaders
from .middleware import HostOriginGuard, SecurityHeaders, header_timeout_protocol
from .routes import STATIC_DIR
from .schemas import MAX_BODY_BYTES
from .state import ApiError, ModelEntry, ServingState, collect_models, error_response

__all__ = ["create_app", "collect_models", "uvicorn_options", "ApiError", "ModelEntry", "ServingState",
           "MAX_BODY_BYTES", "STATIC_DIR"]

HEADER_TIMEOUT = 10.0

_DESCRIPTION = (
    "Images are processed in memory on this machine and never stored. Errors answer "
    "`{\"detail\": ..., \"kind\": ...}`; a busy server answers 503 with `Retry-After`.\n\n"
    "**Live stream** (WebSocket, not listed below): `GET /v1/stream` upgraded to a WebSocket. The server "
    "first sends `{\"type\": \"hello\", \"model\", \"models\", \"max_frame_bytes\"}`. Send each frame as "
    "one binary message (a JPEG) and wait for its answer before sending the next (drop frames, never "
    "queue them): `{\"type\": \"result\", \"frame\", \"model\", \"faces\": [{box, label, confidence, "
    "probabilities, whole_image, track_id}], \"width\", \"height\", \"ms\"}` with faces tracked across "
    "frames (stable `track_id`) and probabilities smoothed per track. A text message "
    "`{\"type\": \"config\", \"model\": NAME}` switches the model (answer `{\"type\": \"config\"}`); bad "
    "frames and unknown models answer `{\"type\": \"error\", \"status\", \"kind\", \"detail\"}` and the "
    "stream goes on. Browsers may connect only from this server's own pages (same origin); a busy server "
    "closes new streams with code 1013 (try again later) and closes a stream idle for a minute.")


def _check_number(name: str, value, lo: float, hi: float, integer: bool = False):
    """``value`` as a number within [lo, hi] (a FerlabError naming ``name`` otherwise)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise FerlabError(f"{name} must be a number (got {value!r})", "bad_option") from None
    if v != v or not lo <= v <= hi or (integer and v != int(v)):
        raise FerlabError(f"{name} must be {'an integer' if integer else 'a number'} in [{lo:g}, {hi:g}] "
                          f"(got {value!r})", "bad_option")
    return int(v) if integer else v


def _default_model(entries: list[ModelEntry], default_model: str) -> str:
    if not entries:
        raise FerlabError("no models to serve: none is bundled yet; give one with --model PATH.onnx "
                          "(exported by `ferlab export`) or --models-dir DIR")
    names = [e.name for e in entries]
    if default_model in names:
        return default_model
    if default_model == "default":
        return names[0]
    raise FerlabError(f"default model {default_model!r} is not among the served models ({', '.join(names)})")


def build_state(models: Any = None, default_model: str = "default", *, detector: str = "blazeface",
                workers: int | None = None, threads: int | None = None, max_body_bytes: int = MAX_BODY_BYTES,
                recognizer_options: dict | None = None, stream_every: int = 3, stream_smoothing: float = 0.6,
                **limits) -> ServingState:
    """The ``ServingState`` of ``create_app`` (arguments there), every number checked."""
    entries = collect_models(models)
    default_model = _default_model(entries, default_model)
    if int(stream_every) < 1 or not 0 <= float(stream_smoothing) < 1:
        raise FerlabError(f"stream_every must be >= 1 and stream_smoothing in [0, 1) "
                          f"(got {stream_every}, {stream_smoothing})", "bad_option")
    cores = os.cpu_count() or 1
    workers = _check_number("workers", min(cores, 4) if workers is None else workers, 1, 256, integer=True)
    threads = _check_number("threads", max(1, cores // workers) if threads is None else threads, 1, 256,
                            integer=True)
    max_body_bytes = _check_number("max_body_bytes", max_body_bytes, 1, 1 << 30, integer=True)
    bounds = {"max_queue": (0, 10_000, True), "queue_timeout": (0.01, 3600, False),
              "body_timeout": (0.01, 3600, False), "max_streams": (0, 10_000, True),
              "stream_idle_timeout": (0.01, 86_400, False), "decode_max_side": (64, 16_384, True)}
    checked = {}
    for key, value in limits.items():
        if key not in bounds:
            raise TypeError(f"create_app() got an unexpected keyword argument {key!r}")
        if value is not None:
            lo, hi, integer = bounds[key]
            checked[key] = _check_number(key, value, lo, hi, integer)
    return ServingState({e.name: e for e in entries}, default_model, detector, workers, threads, max_body_bytes,
                        dict(recognizer_options or {}), int(stream_every), float(stream_smoothing), **checked)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        headers = dict(exc.headers or {})
        if exc.status == 413:
            headers["Connection"] = "close"
        return error_response(exc.status, exc.kind, exc.detail, headers or None)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return error_response(exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "bad_request", f"{where}: {first.get('msg', 'invalid request')}"[:200])


def create_app(models: Any = None, default_model: str = "default", *, detector: str = "blazeface",
               workers: int | None = None, threads: int | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               allowed_origins: Iterable[str] = (), allowed_hosts: Iterable[str] = (),
               recognizer_options: dict | None = None, stream_every: int = 3, stream_smoothing: float = 0.6,
               preload: bool = False, **limits) -> FastAPI:
    """The FastAPI app.

    models: None (the bundled models), a models folder, an ``.onnx`` path, a bundled name, a list of
        those, or a mapping name -> source (see ``collect_models``).
    default_model: the model used when a request names none; ``"default"`` falls back to the first served
        model when no model of that name is served.
    workers: concurrent inferences (default: the number of CPU cores, at most 4); each Recognizer gets
        ``threads`` ONNX Runtime threads (default: cores / workers).
    allowed_hosts: Host names answered besides localhost and IP literals (DNS-rebinding protection).
    allowed_origins: extra browser origins allowed to call the API and open the WebSocket (same-origin is
        always allowed).
    stream_every, stream_smoothing: the WebSocket stream runs the full face detector every N frames (a search
        near the last boxes in between) and averages each track's probabilities with this weight of the past.
    preload: load the default model now (its errors surface here, and the first request is not slowed).
    limits: ``max_queue`` (requests waiting for a worker; default ``workers``), ``queue_timeout`` (10 s),
        ``body_timeout`` (10 s), ``max_streams`` (8), ``stream_idle_timeout`` (60 s), ``decode_max_side``
        (4096 px): see ``ServingState``.
    """

    state = build_state(models, default_model, detector=detector, workers=workers, threads=threads,
                        max_body_bytes=max_body_bytes, recognizer_options=recognizer_options,
                        stream_every=stream_every, stream_smoothing=stream_smoothing, **limits)
    state.allowed_hosts = frozenset(allowed_hosts)
    state.allowed_origins = frozenset(allowed_origins)
    if preload:
        pool = state.pool(state.entry(None))
        pool.release(pool.acquire())
    app = FastAPI(title="ferlab", version=__version__, description=_DESCRIPTION,
                  summary="Facial expression recognition: faces and their expressions in uploaded images and "
                          "live frames.",
                  docs_url=None,  # FastAPI's Swagger page loads from a CDN: assets.docs serves the vendored one
                  redoc_url=None)
    app.state.ferlab = state
    app.add_middleware(IsolationHeaders)  # COOP / COEP (threads in the page's worker), CSP with WebAssembly
    app.add_middleware(HostOriginGuard, allowed_hosts=state.allowed_hosts, allowed_origins=state.allowed_origins)
    app.add_middleware(SecurityHeaders)  # outermost: refusals carry the headers too
    _install_error_handlers(app)
    app.include_router(routes.api)
    app.include_router(routes.stream)
    app.include_router(assets.router)
    app.include_router(routes.page)
    app.mount("/static", CompressedStatic(STATIC_DIR), name="static")
    return app


def uvicorn_options(header_timeout: float = HEADER_TIMEOUT, ws_max_size: int = 16 * 2**20) -> dict:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` that ``ferlab serve`` uses: request headers
    within ``header_timeout`` s (h11 with a deadline), idle keep-alive connections closed after 5 s, no
    server header, WebSocket messages up to ``ws_max_size`` bytes."""
    return {"http": header_timeout_protocol(header_timeout), "timeout_keep_alive": 5, "server_header": False,
            "ws_max_size": ws_max_size}
