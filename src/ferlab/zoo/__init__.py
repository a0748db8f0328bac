"""The bundled trained models: ONNX files with a model card (JSON) each, checked by sha256 on load.

A model is named by its bundled name (``default``, ``fast``, ``ferplus``...) or given as a path to an
``.onnx`` file with its card beside it (``model.json`` next to ``model.onnx``).

Cards are read and validated by ``ferlab.card`` (``read_card`` / ``validate_card``, re-exported here: every
key the inference side uses, with its type and range), and a card without a ``sha256`` is an error when the
model is loaded: an unverifiable model is not loaded.  The bundled cards are read-only (``is_bundled``): nothing in ferlab writes into the package.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from ..card import read_card, validate_card, verify_sha256
from ..errors import FerlabError
from ..io import file_digest

__all__ = ["ZOO_DIR", "bundled_names", "is_bundled", "list_bundled", "read_card", "resolve", "validate_card"]

ZOO_DIR = Path(__file__).resolve().parent


def bundled_names() -> list[str]:
    names = [p.stem for p in ZOO_DIR.glob("*.json") if (ZOO_DIR / f"{p.stem}.onnx").exists()]
    return sorted(names, key=lambda n: (n != "default", n))


def is_bundled(model: str | os.PathLike) -> bool:
    """Whether ``model`` (a name or a path) is one of the models shipped inside the package."""
    text = str(model)
    if text in bundled_names():
        return True
    try:
        p = Path(text).resolve()
    except (OSError, RuntimeError):
        return False
    return p == ZOO_DIR or ZOO_DIR in p.parents


@lru_cache(maxsize=32)
def _verified(onnx_path: str, mtime: float, size: int) -> str:
    return file_digest(onnx_path)


def resolve(model: str | os.PathLike = "default", verify: bool = True) -> tuple[Path, dict]:
    """(onnx path, card) for a bundled name or an .onnx path; checks the card's sha256."""
    text = str(model)
    if text in bundled_names():
        onnx_path = ZOO_DIR / f"{text}.onnx"
    else:
        onnx_path = Path(text)
        if onnx_path.is_dir():
            cands = sorted(onnx_path.glob("*.onnx"))
            if not cands:
                raise FerlabError(f"{onnx_path}: no .onnx model in this folder (export one with `ferlab export`)")
            onnx_path = cands[0]
        if onnx_path.suffix != ".onnx" or not onnx_path.is_file():
            known = ", ".join(bundled_names()) or "none bundled"
            raise FerlabError(f"unknown model {text!r}: not a bundled model ({known}) nor an .onnx file")
    card = read_card(onnx_path.with_suffix(".json"))
    if verify:
        st = onnx_path.stat()
        verify_sha256(onnx_path, card, _verified(str(onnx_path), st.st_mtime, st.st_size) if card.get("sha256") else None)
    return onnx_path, card


def list_bundled() -> list[dict]:
    """Cards of the bundled models (``name`` added), ``default`` first."""
    out = []
    for name in bundled_names():
        card = read_card(ZOO_DIR / f"{name}.json")
        out.append({"name": name, **card})
    return out
