"""The serving state: served models, pools of Recognizers, admission control and the recognition step."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from fastapi.responses import JSONResponse

from ..errors import FerlabError
from ..imageio import decode_image_reduced
from ..inference.blazeface import DEFAULT_SEARCH
from ..inference.recognizer import Recognizer
from ..zoo import ZOO_DIR, bundled_names, list_bundled, read_card

#: FerlabError.kind -> HTTP status (other kinds: the server's fault, 500)
STATUS_OF_KIND = {"empty": 400, "corrupt": 400, "missing": 400, "unsupported": 415, "too_large": 413,
                  "bad_shape": 422, "recognition": 422}


class ApiError(Exception):
    """An error answered as JSON ``{"detail", "kind"}`` with ``status`` (and ``headers``, e.g. Retry-After)."""

    def __init__(self, status: int, kind: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.kind, self.detail, self.headers = status, kind, detail, headers


def error_response(status: int, kind: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "kind": kind}, status_code=status, headers=headers)


def api_error_of(e: FerlabError, model: str = "") -> ApiError:
    """A ``FerlabError`` as the API answers it: the input's fault (decoding, detection, cropping: the kinds
    of ``STATUS_OF_KIND``) is a 4xx; a model that cannot run is the server's (500, kind ``internal``)."""
    kind = getattr(e, "kind", "error") or "error"
    if kind in STATUS_OF_KIND:
        return ApiError(STATUS_OF_KIND[kind], kind, str(e))
    return ApiError(500, "internal", f"model {model!r} cannot run: {e}")


# ------------------------------------------------------------------------------------------------ models
@dataclass
class ModelEntry:
    """A served model: ``name`` clients use, ``source`` given to the Recognizer (bundled name or path)."""

    name: str
    source: str
    card: dict


def _entry_from_onnx(path: Path) -> ModelEntry:
    card = read_card(path.with_suffix(".json"))
    return ModelEntry(str(card.get("name") or path.stem), str(path), card)


def collect_models(models: Any = None) -> list[ModelEntry]:
    """Served models from: None (the bundled ones), a folder of ``.onnx`` + card pairs, an ``.onnx`` path,
    a bundled name, a list of any of those, or a mapping ``name -> bundled name or .onnx path``."""

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
    max_queue: int | None = None      # requests waiting for a worker beyond which new ones get 503
    queue_timeout: float = 10.0       # seconds a request may wait for a worker before it gets 503
    body_timeout: float = 10.0        # seconds the whole request body may take to arrive (then 408)
    max_streams: int = 8              # open WebSocket streams (more are refused)
    stream_idle_timeout: float = 60.0  # a stream sending nothing this long is closed
    decode_max_side: int = 4096       # uploads are decoded reduced to this longest side (boxes mapped back)
    allowed_hosts: frozenset = frozenset()
    allowed_origins: frozenset = frozenset()
    pools: dict[str, _RecognizerPool] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _limiter: Any = None
    pending: int = 0                  # admitted requests (running or waiting); event-loop thread only
    streams: int = 0
    shed: int = 0                     # requests answered 503

    def entry(self, name: str | None) -> ModelEntry:
        name = name or self.default
        e = self.entries.get(name)
        if e is None:
            shown = name if len(name) <= 60 else name[:57] + "..."
            raise ApiError(404, "unknown_model", f"unknown model {shown!r}; served models: "
                                                 f"{', '.join(self.entries)}")
        return e

    def search_of(self, requested: str | None) -> str | None:
        """The photo search a request gets: its own, else the server's; None for detectors without one."""
        if str(self.detector).lower() not in ("blazeface", "auto"):
            return None
        return requested or self.recognizer_options.get("search") or DEFAULT_SEARCH

    def pool(self, entry: ModelEntry) -> _RecognizerPool:
        with self.lock:
            p = self.pools.get(entry.name)
            if p is None:
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

    @property
    def capacity(self) -> int:
        """Requests admitted at once: ``workers`` running plus ``max_queue`` waiting (default: ``workers``)."""
        return self.workers + (self.workers if self.max_queue is None else self.max_queue)

    def overloaded(self, what: str = "requests") -> ApiError:
        self.shed += 1
        return ApiError(503, "overloaded", f"server busy: too many {what} in progress; retry shortly",
                        {"Retry-After": "1"})

    @contextlib.contextmanager
    def admit(self):
        """Admission control: beyond ``capacity`` requests in progress, answer 503 + Retry-After at once
        (load shedding) instead of queueing without bound.  Call from the event loop thread."""
        if self.pending >= self.capacity:
            raise self.overloaded()
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1

    async def run(self, fn, *args):
        """Run blocking ``fn(*args)`` in a worker thread; at most ``workers`` at a time.  A call that waits
        longer than ``queue_timeout`` for a worker is answered 503 (its work never starts)."""
        limiter = self.limiter
        try:
            with anyio.fail_after(self.queue_timeout):
                await limiter.acquire()
        except TimeoutError:
            raise self.overloaded() from None
        try:
            return await anyio.to_thread.run_sync(fn, *args)  # the worker slot is held here, not by anyio
        finally:
            limiter.release()


def recognise(state: ServingState, entry: ModelEntry, data: bytes, name: str,
              step=None, on_no_face: str | None = None, search: str | None = None) -> tuple[int, int, list, float]:
    """Decode (via imageio) and recognise; runs in a worker thread.  ``step(recognizer, image) -> faces``
    replaces ``recognizer.predict`` (the stream tracks faces across frames); ``on_no_face`` and ``search``
    are the request's (None: the server's).

    Bounded work: the image is decoded reduced to ``state.decode_max_side`` (boxes are mapped back to the
    uploaded image's pixels), and the Recognizer bounds detection and cropping (``CROP_MAX_SIDE``,
    ``DETECT_MAX_PIXELS``).  Any failure is a ``FerlabError`` (never a raw library exception)."""
    t0 = time.perf_counter()
    pool = state.pool(entry)
    rec = pool.acquire()
    try:
        # grey is all the Haar detector and the classifier need; colour only for detectors that use it
        image, scale, (w, h) = decode_image_reduced(
            data, name=name, mode="bgr" if rec.needs_color else "gray",
            max_side=state.decode_max_side)
        faces = rec._guard(lambda: rec.predict(image, on_no_face=on_no_face, search=search) if step is None
                           else step(rec, image))
    finally:
        pool.release(rec)
    if scale != 1.0:  # new Face objects: a stream's tracker keeps its own (reduced) boxes
        faces = [dataclasses.replace(f, box=(round(f.box[0] / scale), round(f.box[1] / scale),
                                             max(1, round(f.box[2] / scale)), max(1, round(f.box[3] / scale))),
                                     keypoints=None if f.keypoints is None else
                                     tuple((x / scale, y / scale) for x, y in f.keypoints))
                 for f in faces]
    return w, h, faces, (time.perf_counter() - t0) * 1000.0
