"""The face record: one ``Face`` and where it was seen, and every way ferlab writes it out.

A face becomes output in one place, here, whichever driver found it (``ferlab predict``, ``video``, ``batch``,
the HTTP API, the Python API), so the same face gives the same fields everywhere:

    record = FaceRecord(face, index=0, source="a.jpg", result="faces", model="default", model_sha256="...")
    record.json()                       # the face as JSON: box, label, confidence, probabilities, keypoints...
    record.api_json()                   # the same, as the HTTP API shows it (track_id / keypoints when present)
    record.csv_row(header)              # a CSV row; header = csv_header(PREDICT_CSV_LEAD, classes)
    record.table_row(classes)           # a Parquet row, in table_columns(classes) order (arrow: TABLE_TYPES)

``FaceRecord(None, ...)`` is the row of an image or frame with no face (or, in a batch table, an input that
failed): the context columns are filled, the face columns are empty (CSV) or null (Parquet).

Fields and their precision, the same in every format that has them:

- ``box`` (x, y, w, h: whole pixels; CSV and Parquet as columns ``x y w h``), ``label``, ``whole_image``,
  ``track_id`` (tracked faces), ``detection_score``, ``no_face``;
- ``confidence`` and the probabilities: ``DECIMALS`` (4) in JSON and CSV (CSV columns named by class,
  ``happy``); ``TABLE_DECIMALS`` (6) in Parquet, whose float32 columns (``p_happy``) hold more;
- ``keypoints``: six (x, y) points (``KEYPOINT_NAMES``), ``KEYPOINT_DECIMALS`` (1) in JSON (pairs) and CSV
  (``right_eye_x`` ...), ``TABLE_KEYPOINT_DECIMALS`` (2) in Parquet (one flat list);
- where it was seen: ``source`` (CSV column ``file``), ``kind``, ``frame``, ``time_s`` (video CSV: 3 decimals),
  ``face`` (its number in the image or frame), the model's name and sha256 (Parquet), ``result`` (predict's
  status of the image: faces, no face found, ...).

This module imports nothing from the Recognizer (a ``Face`` is read by its attributes), so
``recognizer.Face.to_dict`` and ``Recognizer.to_table`` / ``keypoint_columns`` can be written with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FerlabError
from .blazeface import KEYPOINT_NAMES

#: decimals of confidence and probabilities in JSON and CSV, of keypoints there, of the detection score
DECIMALS, KEYPOINT_DECIMALS, SCORE_DECIMALS = 4, 1, 3
#: decimals in batch tables (Parquet float32 columns, and ``ferlab batch --format csv``)
TABLE_DECIMALS, TABLE_KEYPOINT_DECIMALS = 6, 2

#: CSV keypoint columns, after the probabilities: right_eye_x, right_eye_y, left_eye_x, ...
KEYPOINT_COLUMNS = tuple(f"{name}_{axis}" for name in KEYPOINT_NAMES for axis in ("x", "y"))
#: the columns of ``ferlab predict --csv`` before the probabilities
PREDICT_CSV_LEAD = ("file", "face", "x", "y", "w", "h", "label", "confidence", "whole_image", "result")
#: the columns of ``ferlab video --csv`` before the probabilities
VIDEO_CSV_LEAD = ("frame", "time_s", "track_id", "x", "y", "w", "h", "label", "confidence")

#: batch table columns (Parquet, ``ferlab batch``, ``batch.Predictor``) before the ``p_<class>`` columns,
#: and after them; the arrow type of each (``batch/store.py`` maps the names to pyarrow types)
TABLE_BASE = (("source", "string"), ("kind", "string"), ("frame", "int64"), ("time_s", "float64"),
              ("face", "int32"), ("x", "int32"), ("y", "int32"), ("w", "int32"), ("h", "int32"),
              ("keypoints", "list<float32>"), ("detection_score", "float32"), ("whole_image", "bool"),
              ("label", "string"), ("confidence", "float32"))
TABLE_TAIL = (("model", "string"), ("model_sha256", "string"))
TABLE_BASE_COLUMNS = tuple(c for c, _ in TABLE_BASE)
TABLE_TAIL_COLUMNS = tuple(c for c, _ in TABLE_TAIL)


def table_columns(classes: Sequence[str]) -> list[str]:
    """The batch table's columns: ``TABLE_BASE``, one ``p_<class>`` per class, ``TABLE_TAIL``."""
    return [*TABLE_BASE_COLUMNS, *(f"p_{c}" for c in classes), *TABLE_TAIL_COLUMNS]


def table_types(classes: Sequence[str]) -> list[tuple[str, str]]:
    """(column, arrow type name) of the batch table, in ``table_columns`` order."""
    return [*TABLE_BASE, *((f"p_{c}", "float32") for c in classes), *TABLE_TAIL]


def csv_header(lead: Sequence[str], classes: Sequence[str]) -> list[str]:
    """A face CSV's header: ``lead`` (``PREDICT_CSV_LEAD``, ``VIDEO_CSV_LEAD``), the classes, the keypoints."""
    return [*lead, *classes, *KEYPOINT_COLUMNS]


# ------------------------------------------------------------------------------------------------ one face
def box_of(face) -> tuple[int, int, int, int]:
    x, y, w, h = (int(v) for v in face.box)
    return x, y, w, h


def json_face(face) -> dict:
    """A ``Face`` as JSON (``Face.to_dict``; the faces of ``ferlab predict --json``; what ``annotate`` draws)."""
    return {"box": list(box_of(face)), "label": face.label, "confidence": round(float(face.confidence), DECIMALS),
            "probabilities": {k: round(float(v), DECIMALS) for k, v in face.probabilities.items()},
            "whole_image": bool(face.whole_image), "track_id": face.track_id,
            "detection_score": None if face.detection_score is None
            else round(float(face.detection_score), SCORE_DECIMALS),
            "keypoints": None if face.keypoints is None
            else [[round(float(x), KEYPOINT_DECIMALS), round(float(y), KEYPOINT_DECIMALS)] for x, y in face.keypoints],
            "no_face": bool(face.no_face)}


def api_face(face) -> dict:
    """A ``Face`` as the HTTP API shows it (``serving/schemas.py`` ``FaceOut``): the JSON face's box, label,
    confidence, probabilities and whole_image, plus ``track_id`` (tracked faces) and ``keypoints`` when present."""
    d = json_face(face)
    out = {k: d[k] for k in ("box", "label", "confidence", "probabilities", "whole_image")}
    if d["track_id"] is not None:
        out["track_id"] = int(d["track_id"])
    if d["keypoints"] is not None:
        out["keypoints"] = d["keypoints"]
    return out


def keypoint_columns(face) -> dict:
    """The keypoint columns of a face for CSV rows (``KEYPOINT_COLUMNS``; empty strings without keypoints)."""
    row = {}
    for k, name in enumerate(KEYPOINT_NAMES):
        pt = face.keypoints[k] if face.keypoints is not None else None
        row[f"{name}_x"] = "" if pt is None else round(float(pt[0]), KEYPOINT_DECIMALS)
        row[f"{name}_y"] = "" if pt is None else round(float(pt[1]), KEYPOINT_DECIMALS)
    return row


def flat_keypoints(face, decimals: int = TABLE_KEYPOINT_DECIMALS) -> list[float]:
    """The keypoints as one flat list x0, y0, x1, ... (the batch table's ``keypoints``; [] without them)."""
    kp = getattr(face, "keypoints", None)
    if kp is None:
        return []
    try:
        arr = np.asarray(kp, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return []
    return [round(float(v), decimals) for v in arr]


def table_rows(results, names: Sequence[str] | None = None) -> list[dict]:
    """Flat rows, one per face (``Recognizer.to_table``): image, face, x, y, w, h, label, confidence, whole_image,
    track_id, then one probability column per class.  ``results``: the faces of one image, a list of such
    lists, or a dict {image name: faces}; ``names`` labels the images (default: their index)."""
    if isinstance(results, dict):
        names, groups = list(results.keys()), list(results.values())
    elif results and all(hasattr(r, "box") for r in results):
        groups = [results]
    else:
        groups = list(results)
    if names is not None and len(names) != len(groups):
        raise FerlabError(f"{len(names)} names for {len(groups)} images")
    rows = []
    for gi, faces in enumerate(groups):
        for fi, f in enumerate(faces):
            rows.append(FaceRecord(f, index=fi, source=names[gi] if names is not None else gi).row())
    return rows


@dataclass(frozen=True)
class FaceRecord:
    """One face (``face``: a ``Face``; None for the row of an image or frame without one) and where it was
    seen.  Its writers: ``json`` / ``api_json``, ``row`` (the table dict), ``csv_row``, ``table_row``."""

    face: Any = None
    index: int | None = None          # the face's number in its image or frame
    source: Any = None                # the image's name or path (CSV column ``file``)
    kind: str = "image"               # "image" | "video" (batch tables)
    frame: int | None = None
    time_s: float | None = None
    result: str | None = None         # predict's status of the image (faces, no face found, ...)
    model: str = ""
    model_sha256: str = ""

    def json(self) -> dict:
        return json_face(self.face)

    def api_json(self) -> dict:
        return api_face(self.face)

    def row(self) -> dict:
        """The face as a flat dict (``Recognizer.to_table``'s row): image, face, box, label, confidence,
        whole_image, track_id, one probability per class."""
        f = self.face
        x, y, w, h = box_of(f)
        row = {"image": self.source, "face": self.index, "x": x, "y": y, "w": w, "h": h, "label": f.label,
               "confidence": round(float(f.confidence), DECIMALS), "whole_image": bool(f.whole_image),
               "track_id": f.track_id}
        row.update({c: round(float(p), DECIMALS) for c, p in f.probabilities.items()})
        return row

    def csv_fields(self) -> dict:
        """Every CSV field of this record by column name (those a header does not name are left out)."""
        out = {"file": self.source, "frame": self.frame, "result": self.result,
               "time_s": "" if self.time_s is None else f"{self.time_s:.3f}"}
        if self.face is not None:
            out.update(self.row())
            out.update(keypoint_columns(self.face))
        return out

    def csv_row(self, header: Sequence[str]) -> list:
        """The values of ``header`` (``csv_header(...)``): empty for what this record does not have (a row
        without a face has only its context)."""
        fields = self.csv_fields()
        return ["" if fields.get(c) is None else fields[c] for c in header]

    def table_row(self, classes: Sequence[str]) -> tuple:
        """The batch table's row (``table_columns(classes)`` order); without a face, nulls between the
        source / kind and the model columns."""
        f = self.face
        if f is None:
            return (self.source, self.kind, *[None] * (len(table_columns(classes)) - 4), self.model, self.model_sha256)
        score = getattr(f, "detection_score", None)
        return (self.source, self.kind, self.frame, self.time_s, self.index, *box_of(f), flat_keypoints(f),
                None if score is None else float(score), bool(f.whole_image), f.label,
                round(float(f.confidence), TABLE_DECIMALS),
                *(round(float(f.probabilities[c]), TABLE_DECIMALS) for c in classes), self.model, self.model_sha256)
