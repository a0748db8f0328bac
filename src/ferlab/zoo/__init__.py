"""The bundled trained models: ONNX files with a model card (JSON) each, checked by sha256 on load.

A model is named by its bundled name (``default``, ``fast``, ``ferplus``...) or given as a path to an
``.onnx`` file with its card beside it (``model.json`` next to ``model.onnx``).

Cards are validated when read (``validate_card``: every key the inference side uses, with its type and
range), and a card without a ``sha256`` is an error when the model is loaded: an unverifiable model is not
loaded.  The bundled cards are read-only (``is_bundled``): nothing in ferlab writes into the package.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
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


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _card_problem(card) -> str | None:
    """What is wrong with a card's values (None when nothing)."""
    if not isinstance(card, dict):
        return "a model card is a JSON object"
    for key in ("classes", "input_size"):
        if key not in card:
            return f"lacks {key!r}"
    classes = card["classes"]
    if (not isinstance(classes, list) or not 2 <= len(classes) <= 1000
            or not all(isinstance(c, str) and c.strip() for c in classes) or len(set(classes)) != len(classes)):
        return "'classes' must be a list of 2 to 1000 distinct, non-empty names"
    size = card["input_size"]
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 1024:
        return f"'input_size' must be an integer from 8 to 1024 (got {size!r})"
    checks = {
        "channels": lambda v: v in (1, 3),
        "face_margin": lambda v: _number(v) and -0.5 < v <= 2.0,
        "temperature": lambda v: _number(v) and 0 < v <= 100,
        "crop_inside_graph": lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= size,
        "sha256": lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
        "normalization": lambda v: isinstance(v, dict) and all(_number(v[k]) for k in ("mean", "std") if k in v)
        and (not _number(v.get("std")) or v["std"] > 0),
    }
    for key, ok in checks.items():
        if key in card and card[key] is not None and not ok(card[key]):
            return f"{key!r} is out of range or of the wrong type (got {str(card[key])[:60]!r})"
    return None


def validate_card(card, where: str | os.PathLike = "model card") -> dict:
    """``card`` when its values are usable; else a one-line ``FerlabError`` (kind ``card``) naming ``where``."""
    problem = _card_problem(card)
    if problem:
        raise FerlabError(f"{where}: model card {problem}", "card")
    return card


def read_card(path: str | os.PathLike) -> dict:
    p = Path(path)
    try:
        card = json.loads(p.read_text())
    except FileNotFoundError:
        raise FerlabError(f"{p}: model card missing (every .onnx model needs its .json card beside it)",
                          "card") from None
    except json.JSONDecodeError as e:
        raise FerlabError(f"{p}: model card is not valid JSON ({e.msg}, line {e.lineno})", "card") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FerlabError(f"{p}: cannot read the model card ({getattr(e, 'strerror', None) or e})", "card") from None
    return validate_card(card, p)


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
    if verify:
        if not card.get("sha256"):
            raise FerlabError(f"{onnx_path.with_suffix('.json')}: model card has no sha256, so the model cannot "
                              "be verified (re-export it with `ferlab export`, which records it)", "card")
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
