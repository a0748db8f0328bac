"""The model card: the preprocessing contract between training and inference, and its one home.

A card is the JSON file beside an ``.onnx`` model (``model.json`` next to ``model.onnx``).  It says what the
graph expects and what it returns, so that whatever reads it (``ferlab predict``, the web page, ``ferlab
evaluate``) feeds the model as it was trained:

- ``input_size`` (48): the side of the grey face crop the graph takes, float32 grey levels 0-255;
- ``crop_inside_graph``: the centre crop the graph takes itself (the training input size, 44 for most);
- ``normalization``: ``(x * scale - mean) / std``, applied inside the graph (``NORM_*`` below);
- ``face_margin``: the fraction of the detected face box added on each side before cropping
  (``FACE_MARGIN``: FER2013's framing, measured by benchmarks/face_margin.py);
- ``classes``, ``temperature`` (softmax(logits / T) gives calibrated probabilities), ``sha256`` of the file,
  and what trained it (``training``), with the command that exported it.

``ModelCard`` is the dataclass every writer builds (``ferlab export`` for one model, ``ferlab ensemble
--export`` for an ensemble) and ``read_card`` / ``validate_card`` are the one reader and checker (the zoo
and the server use them).  Stdlib only: the card is on the ground floor, below training and inference.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import FerlabError
from .io import atomic_write, file_digest, typed_command

#: side of the grey face crop every exported graph takes (float32 grey levels 0-255)
INPUT_SIZE = 48
#: network input = (grey / 255 - NORM_MEAN) / NORM_STD: the training side applies it in ``training.forward``,
#: an exported graph inside itself (``training.export.Preprocessed``)
NORM_SCALE, NORM_MEAN, NORM_STD = 1 / 255, 0.5, 0.25
#: fraction of the face box added on each side when cropping a face: FER2013 framing, benchmarks/face_margin.py
FACE_MARGIN = 0.02
#: what a single-graph card says of its input
GRAPH_INPUT = "float32 (N, 1, 48, 48) grey levels 0-255; centre crop and normalisation happen inside the graph"


def normalization(**extra: Any) -> dict[str, Any]:
    """The card's ``normalization`` entry (applied inside the graph)."""
    return {"scale": NORM_SCALE, "mean": NORM_MEAN, "std": NORM_STD, "inside_graph": True, **extra}


# ----------------------------------------------------------------------------------------------- checks

def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def card_problem(card) -> str | None:
    """What is wrong with a card's values (None when nothing): every key the inference side uses, with its
    type and range."""
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
    problem = card_problem(card)
    if problem:
        raise FerlabError(f"{where}: model card {problem}", "card")
    return card


def read_card(path: str | os.PathLike) -> dict:
    """The validated card at ``path`` (a dict: every key as written, unknown ones too)."""
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


def write_card(card: dict, path: str | os.PathLike) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2)))


def verify_sha256(onnx_path: str | os.PathLike, card: dict, digest: str | None = None) -> None:
    """Raise unless ``card`` records a sha256 and it is that of ``onnx_path`` (``digest``: already computed)."""
    onnx_path = Path(onnx_path)
    if not card.get("sha256"):
        raise FerlabError(f"{onnx_path.with_suffix('.json')}: model card has no sha256, so the model cannot "
                          "be verified (re-export it with `ferlab export`, which records it)", "card")
    digest = digest or file_digest(onnx_path)
    if digest != card["sha256"]:
        raise FerlabError(f"{onnx_path}: sha256 {digest[:12]}... does not match its model card "
                          f"({card['sha256'][:12]}...): the file is corrupt or was replaced")


# ------------------------------------------------------------------------------------------- the card

#: keys left out of the JSON while they are None (the others are always written)
_OPTIONAL = ("crop_inside_graph", "ensemble", "calibration", "onnx_file", "onnx_bytes", "sha256")


@dataclass
class ModelCard:
    """One model card.  Field order is the JSON's key order; keys a reader does not know travel in ``extra``
    (written after ``calibration``, before the file facts)."""

    name: str
    classes: list[str]
    input_size: int = INPUT_SIZE
    channels: int = 1
    color: str = "gray"
    input: str = GRAPH_INPUT
    crop_inside_graph: int | None = None
    normalization: dict[str, Any] = field(default_factory=normalization)
    output: str = "logits"
    face_margin: float = FACE_MARGIN
    tta: str = "none"
    quantization: str = "none"
    architecture: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    params: int | None = None
    macs: int | None = None
    ensemble: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    export_command: str = field(default_factory=typed_command)
    exported: str = field(default_factory=lambda: time.strftime("%Y-%m-%d"))
    temperature: float = 1.0
    calibration: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    onnx_file: str | None = None
    onnx_bytes: int | None = None
    sha256: str | None = None

    # -- dict / JSON

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                out.update(self.extra)
                continue
            v = getattr(self, f.name)
            if v is None and f.name in _OPTIONAL:
                continue
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, card: dict[str, Any]) -> ModelCard:
        known = {f.name for f in fields(cls)} - {"extra"}
        obj = cls(**{k: v for k, v in card.items() if k in known})
        obj.extra = {k: v for k, v in card.items() if k not in known}
        return obj

    def update(self, values: dict[str, Any] | None) -> ModelCard:
        """Set keys (known ones as fields, others into ``extra``)."""
        known = {f.name for f in fields(self)} - {"extra"}
        for k, v in (values or {}).items():
            if k in known:
                setattr(self, k, v)
            else:
                self.extra[k] = v
        return self

    # -- files

    @classmethod
    def read(cls, path: str | os.PathLike) -> ModelCard:
        return cls.from_dict(read_card(path))

    def write(self, path: str | os.PathLike) -> None:
        """Write the card (JSON) to ``path`` atomically, as it stands (no checks: a card being built may lack
        its sha256 yet)."""
        write_card(self.to_dict(), path)

    def validate(self, where: str | os.PathLike = "model card") -> ModelCard:
        """``self`` when its values are usable (``card_problem``); else a one-line ``FerlabError``."""
        validate_card(self.to_dict(), where)
        return self

    def verify(self, onnx_path: str | os.PathLike) -> None:
        """Raise unless the card's sha256 is that of ``onnx_path``."""
        verify_sha256(onnx_path, self.to_dict())

    def seal(self, onnx_path: str | os.PathLike, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Add ``extra`` and the file facts (name, size, sha256) and write the card beside ``onnx_path``;
        returns the card as written."""
        onnx_path = Path(onnx_path)
        self.update(extra)
        self.onnx_file = onnx_path.name
        self.onnx_bytes = onnx_path.stat().st_size
        self.sha256 = file_digest(onnx_path)
        self.write(onnx_path.with_suffix(".json"))
        return self.to_dict()
