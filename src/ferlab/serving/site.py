"""A static site: the web page, its runtime (the vendored onnxruntime-web), the face detectors and the models, in
one folder that any static web server serves (nginx, a bucket, GitHub Pages) with no Python behind it.  The
page then runs the whole pipeline on the visitor's device (``static/worker.js``).

    DIR/index.html                      the page (relative links: the folder may live under any path)
    DIR/static/...                      app.js, pipeline.js, worker.js, style.css, vendor/ort/* (+ .gz copies)
    DIR/models.json                     the manifest the page reads: models with their cards, the detectors
    DIR/models/NAME.onnx                the classifiers (sha256 on their cards, checked by the page)
    DIR/models/detectors/*.onnx         BlazeFace short and full range
    DIR/_headers                        COOP / COEP for hosts that read it (Netlify, Cloudflare Pages)

Threads in the page need a cross-origin-isolated page, i.e. the server must send
``Cross-Origin-Opener-Policy: same-origin`` and ``Cross-Origin-Embedder-Policy: require-corp``; without them
the page runs on one thread.  No FastAPI needed: this module uses only the zoo and the standard library.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import urllib.parse
from pathlib import Path

from ..errors import FerlabError
from ..inference import blazeface, crop, live, recognizer
from ..inference.blazeface import MODELS_DIR as DETECTOR_DIR
from ..inference.blazeface import RANGES
from ..zoo import bundled_names, resolve

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: the page's own files (the vendored runtime is copied whole)
PAGE_FILES = ("app.js", "pipeline.js", "worker.js", "style.css")
#: precompressed copies for servers that serve NAME.gz (nginx gzip_static, most buckets with metadata)
GZIP_SUFFIXES = (".js", ".mjs", ".wasm", ".css", ".html", ".json")
MARKER = ".ferlab-site"
HEADERS = """/*
  Cross-Origin-Opener-Policy: same-origin
  Cross-Origin-Embedder-Policy: require-corp
  Cross-Origin-Resource-Policy: same-origin
"""


def detector_files() -> dict[str, Path]:
    return {r: DETECTOR_DIR / f"blazeface_{r}.onnx" for r in RANGES}


def file_name(name: str) -> str:
    """A model name as a safe file name (the page reads the file name from models.json)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "model"


def detection_constants() -> dict:
    """The constants of the detection pipeline (``inference.blazeface``, ``inference.live``) that the page's
    ``pipeline.js`` mirrors: sent in models.json so the two run on the same numbers."""
    import dataclasses

    bf = blazeface

    def spec(s) -> dict:
        d = dataclasses.asdict(s)
        d["rotations"] = list(d.get("rotations", (0,)))
        return d

    return {"searches": {k: spec(v) for k, v in bf.SEARCHES.items()}, "default_search": bf.DEFAULT_SEARCH,
            "live_search": spec(bf.LIVE_SEARCH), "face_in_min": bf.FACE_IN_MIN, "level_step": bf.LEVEL_STEP,
            "pyramid_range": bf.PYRAMID_RANGE, "window": bf.WINDOW, "search_every": live.SEARCH_EVERY,
            "eyes_apart": list(bf.EYES_APART), "mouth_drop": list(bf.MOUTH_DROP), "max_skew": bf.MAX_SKEW,
            "max_nose_off": bf.MAX_NOSE_OFF, "contain": bf.CONTAIN, "framing": bf.FRAMING,
            "upright_score": getattr(bf, "UPRIGHT_SCORE", None), "sideways": getattr(crop, "SIDEWAYS", None),
            "search_min_score": getattr(bf, "SEARCH_MIN_SCORE", 0.0),
            "photo_tta": getattr(recognizer, "PHOTO_TTA", None)}


def manifest(models: list[tuple[str, dict]], default: str, *, server: bool, model_url=None,
             search: str | None = None, max_side: int | None = None) -> dict:
    """``models.json``: what the page loads in device mode.  ``models``: (name, card) pairs; ``model_url``
    gives a model's file relative to the page (default ``models/NAME.onnx``); ``search``: the photo search
    the page runs (default: the Python default); ``max_side``: the bound on the finest pyramid level the
    detector was given (``--max-side``; None: none)."""
    url = model_url or (lambda name: f"models/{urllib.parse.quote(name)}.onnx")
    detectors = {}
    for rng, path in detector_files().items():
        card = json.loads(path.with_suffix(".json").read_text())
        detectors[rng] = {"file": f"models/detectors/{path.name}", "card": card}
    return {"default": default, "server": bool(server), "search": search or blazeface.DEFAULT_SEARCH,
            "models": [{"name": n, "file": url(n), "card": c} for n, c in models],
            "detectors": detectors, "detection": {**detection_constants(), "max_side": max_side}}


def site_models(models=None) -> list[tuple[str, Path, dict]]:
    """(name, onnx path, card) of the models a site carries: None (the bundled ones), bundled names, .onnx
    paths and folders of .onnx + card pairs; each file checked against its card's sha256."""
    items = list(bundled_names()) if not models else [str(m) for m in models]
    out: list[tuple[str, Path, dict]] = []
    bundled = set(bundled_names())
    for item in items:
        p = Path(item)
        if item not in bundled and p.is_dir():
            found = sorted(q for q in p.glob("*.onnx") if q.with_suffix(".json").exists())
            if not found:
                raise FerlabError(f"{p}: no .onnx model with its .json card in this folder")
            sources = [str(q) for q in found]
        else:
            sources = [item]
        for src in sources:
            path, card = resolve(src)  # unknown names, missing cards and sha256 mismatches are refused here
            if not card.get("sha256"):
                raise FerlabError(f"{path}: its card has no sha256; the page refuses unchecked models "
                                  "(re-export it with `ferlab export`)")
            name = item if item in bundled else str(card.get("name") or path.stem)
            out.append((name, path, card))
    seen: set[str] = set()
    for name, _, _ in out:
        if file_name(name) in seen:
            raise FerlabError(f"two models are named {name!r}: give them distinct names")
        seen.add(file_name(name))
    return out


def _gzip_copy(path: Path) -> None:
    if path.suffix in GZIP_SUFFIXES and path.stat().st_size >= 1024:
        with open(path, "rb") as src, gzip.GzipFile(path.with_name(path.name + ".gz"), "wb", 9, mtime=0) as dst:
            shutil.copyfileobj(src, dst)


def write_site(out: str | os.PathLike, models=None, *, compress: bool = True) -> dict:
    """Writes the static site to ``out`` (a new or empty folder, or a site written before, which is replaced)
    and returns a summary: {out, models, default, files, bytes}.  Written to a temporary folder beside ``out``
    and renamed into place when complete."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FerlabError(f"--out {out}: is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise FerlabError(f"--out {out}: folder is not empty and was not written by `ferlab site`; "
                          "choose a new or empty folder")
    chosen = site_models(models)
    if not chosen:
        raise FerlabError("no models to put on the site: none is bundled; give one with --model PATH.onnx")
    names = [n for n, _, _ in chosen]
    default = "default" if "default" in names else names[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        (tmp / "static").mkdir(parents=True)
        html = (STATIC_DIR / "index.html").read_text()
        (tmp / "index.html").write_text(html.replace('"/static/', '"static/'))
        for name in PAGE_FILES:
            shutil.copyfile(STATIC_DIR / name, tmp / "static" / name)
        shutil.copytree(STATIC_DIR / "vendor", tmp / "static" / "vendor",
                        ignore=shutil.ignore_patterns("*.gz", ".*", "swagger"))  # /docs needs a server
        (tmp / "models" / "detectors").mkdir(parents=True)
        for path in detector_files().values():
            shutil.copyfile(path, tmp / "models" / "detectors" / path.name)
        entries = []
        for name, path, card in chosen:
            shutil.copyfile(path, tmp / "models" / f"{file_name(name)}.onnx")
            entries.append((name, {**card, "name": name}))
        files = {n: f"models/{file_name(n)}.onnx" for n in names}
        data = manifest(entries, default, server=False, model_url=lambda n: files[n])
        (tmp / "models.json").write_text(json.dumps(data, indent=1))
        (tmp / "_headers").write_text(HEADERS)
        (tmp / MARKER).write_text("written by ferlab site\n")
        if compress:
            for p in list(tmp.rglob("*")):
                if p.is_file():
                    _gzip_copy(p)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    written = [p for p in out.rglob("*") if p.is_file()]
    return {"out": str(out), "models": names, "default": default, "files": len(written),
            "bytes": sum(p.stat().st_size for p in written)}


def read_manifest(folder: str | os.PathLike) -> dict:
    """The models.json of a site folder (tests, tools)."""
    return json.loads((Path(folder) / "models.json").read_text())


