"""What the in-browser pipeline needs from the server: the page's files (compressed, cached), the models' bytes
and ``models.json``, and the headers that make the page cross-origin isolated (threads in onnxruntime-web).

- ``GET /models.json``                     the served models (name, file, card) and the face detectors, the
  manifest the page reads in device mode; ``ferlab site`` writes the same file (``manifest``);
- ``GET /models/{name}.onnx``              a served model's bytes (a served name, never a path);
- ``GET /models/detectors/{name}.onnx``    the bundled BlazeFace graphs;
- ``GET /docs``                             Swagger UI (vendored) on ``/openapi.json``;
- ``/static/...``                          the page, its scripts and the vendored runtime (``CompressedStatic``:
  gzip when the client accepts it, compressed once and kept in memory; ETag / 304; ``Cache-Control``);
- ``IsolationHeaders``: COOP ``same-origin`` + COEP ``require-corp`` (SharedArrayBuffer, hence threads), a CSP
  that allows WebAssembly (``'wasm-unsafe-eval'``) and module workers from the page's own origin.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import threading
import urllib.parse
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ..zoo import resolve
from .middleware import AddHeaders
from .site import detector_files, manifest
from .state import ApiError, ServingState

STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
#: the page's Content-Security-Policy: the server's own (middleware.SecurityHeaders) plus WebAssembly and
#: workers from this origin
CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
       "connect-src 'self'; style-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
ISOLATION = [(b"cross-origin-opener-policy", b"same-origin"), (b"cross-origin-embedder-policy", b"require-corp"),
             (b"cross-origin-resource-policy", b"same-origin")]
TYPES = {".mjs": "text/javascript; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".wasm": "application/wasm", ".onnx": "application/octet-stream", ".json": "application/json",
         ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
#: files worth compressing (the model graphs are int8 weights: they barely shrink)
COMPRESSIBLE = (".mjs", ".js", ".wasm", ".css", ".html", ".json", ".txt", ".svg")
MIN_COMPRESS = 1024
#: the vendored runtime changes only with ferlab's version (scripts/vendor_web.py): a day in the cache; the
#: page's own files are revalidated (ETag) on every load
VENDOR_MAX_AGE = 86_400


class IsolationHeaders(AddHeaders):
    """COOP / COEP / CORP and the page's CSP on every HTTP response (inside ``SecurityHeaders``, which adds
    only the headers still missing)."""

    HEADERS = [*ISOLATION, (b"content-security-policy", CSP.encode())]
    REPLACE = frozenset({b"content-security-policy"})


def content_type(path: Path) -> str:
    return TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class CompressedStatic:
    """Static files of ``directory`` (GET / HEAD): gzip-encoded when the client accepts it (compressed once per
    file version and kept in memory; a ``NAME.gz`` beside the file is used as it is), ETag and 304,
    ``Cache-Control`` (``VENDOR_MAX_AGE`` under ``vendor/``, else ``no-cache``)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory).resolve()
        self._gz: dict[tuple[str, float, int], bytes] = {}
        self._lock = threading.Lock()

    def _file(self, rel: str) -> Path | None:
        rel = urllib.parse.unquote(rel).lstrip("/")
        if not rel or "\x00" in rel or rel.endswith(".gz"):
            return None
        p = (self.directory / rel).resolve()
        if self.directory not in p.parents or not p.is_file():
            return None
        return p

    def gzipped(self, p: Path, st) -> bytes:
        key = (str(p), st.st_mtime, st.st_size)
        with self._lock:
            if key in self._gz:
                return self._gz[key]
        pre = p.with_name(p.name + ".gz")
        data = pre.read_bytes() if pre.is_file() and pre.stat().st_mtime >= st.st_mtime else \
            gzip.compress(p.read_bytes(), compresslevel=6, mtime=0)
        with self._lock:
            self._gz = {k: v for k, v in self._gz.items() if k[0] != key[0]}
            self._gz[key] = data
        return data

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        import anyio

        if scope["method"] not in ("GET", "HEAD"):
            resp = JSONResponse({"detail": "method not allowed", "kind": "method_not_allowed"}, 405,
                                headers={"Allow": "GET, HEAD"})
            await resp(scope, receive, send)
            return
        path, root = scope["path"], scope.get("root_path", "")
        p = self._file(path[len(root):] if root and path.startswith(root) else path)
        if p is None:
            await JSONResponse({"detail": "not found", "kind": "not_found"}, 404)(scope, receive, send)
            return
        st = p.stat()
        etag = etag_of(p)
        rel = p.relative_to(self.directory).as_posix()
        headers = {"ETag": etag, "Vary": "Accept-Encoding",
                   "Cache-Control": f"public, max-age={VENDOR_MAX_AGE}" if rel.startswith("vendor/") else "no-cache"}
        req = Request(scope)
        if etag in [t.strip() for t in req.headers.get("if-none-match", "").split(",")]:
            await Response(status_code=304, headers=headers)(scope, receive, send)
            return
        accepts = "gzip" in req.headers.get("accept-encoding", "").lower()
        if accepts and p.suffix.lower() in COMPRESSIBLE and st.st_size >= MIN_COMPRESS:
            body = await anyio.to_thread.run_sync(self.gzipped, p, st)
            headers["Content-Encoding"] = "gzip"
            resp = Response(b"" if scope["method"] == "HEAD" else body, media_type=content_type(p), headers=headers)
            if scope["method"] == "HEAD":
                resp.headers["content-length"] = str(len(body))
            await resp(scope, receive, send)
            return
        await FileResponse(p, media_type=content_type(p), headers=headers)(scope, receive, send)


def etag_of(p: Path) -> str:
    st = p.stat()
    return '"' + hashlib.sha1(f"{st.st_mtime_ns}-{st.st_size}".encode()).hexdigest()[:20] + '"'


def revalidated(request: Request, p: Path) -> Response:
    """A model file with its ETag, or 304 when the client's copy is that version (a warm page reloads no
    model bytes)."""
    etag = etag_of(p)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return FileResponse(p, media_type="application/octet-stream", headers=headers)


# ---------------------------------------------------------------------------------------------- models
def served_manifest(state: ServingState) -> dict:
    entries = list(state.entries.values())
    return manifest([(e.name, {**e.card, "name": e.name}) for e in entries], state.default, server=True,
                    search=state.search_of(None), max_side=state.recognizer_options.get("max_side"))


router = APIRouter()


@router.get("/docs", include_in_schema=False)
async def docs():
    """The API described by Swagger UI (vendored: scripts/vendor_web.py), from this server's /openapi.json."""
    return FileResponse(STATIC_DIR / "docs.html", media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})


@router.get("/models.json", include_in_schema=False)
async def models_json(request: Request):
    return JSONResponse(served_manifest(request.app.state.ferlab), headers={"Cache-Control": "no-cache"})


@router.get("/models/detectors/{name}.onnx", include_in_schema=False)
async def detector_bytes(name: str, request: Request):
    files = {p.stem: p for p in detector_files().values()}
    if name not in files:
        raise ApiError(404, "not_found", f"unknown face detector {name!r}")
    return revalidated(request, files[name])


@router.get("/models/{name}.onnx", include_in_schema=False)
async def model_bytes(name: str, request: Request):
    state: ServingState = request.app.state.ferlab
    entry = state.entries.get(name)
    if entry is None:
        raise ApiError(404, "not_found", f"unknown model {name!r}: served models are {', '.join(state.entries)}")
    path, _ = resolve(entry.source, verify=False)  # the page checks the bytes against the card itself
    return revalidated(request, path)
