"""The bundled trained models: ONNX files with a model card (JSON) each, checked by sha256 on load.

A model is named by its bundled name (``default``, ``fast``, ``ferplus``...) or given as a path to an
``.onnx`` file with its card beside it (``model.json`` next to ``model.onnx``).
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from ..errors import FerlabError

ZOO_DIR = Path(__file__).resolve().parent


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundled_names() -> list[str]:
    names = [p.stem for p in ZOO_DIR.glob("*.json") if (ZOO_DIR / f"{p.stem}.onnx").exists()]
    return sorted(names, key=lambda n: (n != "default", n))


def read_card(path: str | os.PathLike) -> dict:
    p = Path(path)
    try:
        card = json.loads(p.read_text())
    except FileNotFoundError:
        raise FerlabError(f"{p}: model card missing (every .onnx model needs its .json card beside it)") from None
    except json.JSONDecodeError as e:
        raise FerlabError(f"{p}: model card is not valid JSON ({e.msg}, line {e.lineno})") from None
    for key in ("classes", "input_size"):
        if key not in card:
            raise FerlabError(f"{p}: model card lacks {key!r}")
    return card


@lru_cache(maxsize=32)
def _verified(onnx_path: str, mtime: float, size: int) -> str:
    return _sha256(Path(onnx_path))


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
    if verify and card.get("sha256"):
        st = onnx_path.stat()
        digest = _verified(str(onnx_path), st.st_mtime, st.st_size)
        if digest != card["sha256"]:
            raise FerlabError(f"{onnx_path}: sha256 {digest[:12]}... does not match its model card "
                              f"({card['sha256'][:12]}...): the file is corrupt or was replaced")
    return onnx_path, card


def list_bundled() -> list[dict]:
    """Cards of the bundled models (``name`` added), ``default`` first."""
    out = []
    for name in bundled_names():
        card = read_card(ZOO_DIR / f"{name}.json")
        out.append({"name": name, **card})
    return out
