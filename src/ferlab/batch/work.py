"""The work of one batch worker: units (images, video segments) -> face rows, or an error row.

``UnitWorker`` holds one ``Recognizer`` (the ONNX model is loaded once per worker process or Ray actor) and
turns units into ``UnitResult`` objects.  ``Predictor`` is the same thing for a user's own Ray Data pipeline:
``ds.map_batches(ferlab.batch.Predictor, fn_constructor_kwargs={...}, concurrency=4, batch_size=32)``.

Every row describes one face: where it came from (source, frame and timestamp for videos), its box,
keypoints (when the detector gives them, else empty), label, confidence, every probability, and the model's
name and sha256.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import FerlabError
from ..imageio import decode_image
from ..inference.options import DEFAULT_SEARCH, InferenceOptions, check_option
from ..inference.recognizer import Recognizer
from ..inference.records import TABLE_BASE_COLUMNS, TABLE_TAIL_COLUMNS, FaceRecord, table_columns
from ..inference.video import open_video
from .inputs import Unit

SCHEMA_VERSION = 1

#: face-row columns before the per-class probabilities (``p_<class>``) and after them: the face record's table
#: columns (``inference/records.py``, which also turns a face into a row)
BASE_COLUMNS = TABLE_BASE_COLUMNS
TAIL_COLUMNS = TABLE_TAIL_COLUMNS
ERROR_COLUMNS = ("source", "kind", "frame_start", "frame_end", "error_kind", "error", "model", "model_sha256")


def face_columns(classes) -> list[str]:
    return table_columns(classes)


@dataclass
class BatchOptions:
    """What decides the rows of a job (recorded in the output folder; a re-run must match it).

    The fields that are inference options (model, detector, min_face, max_side, margin, on_no_face, search,
    threads) are rows of the options table (``inference/options.py`` ``FIELDS``: values, ranges, help), checked
    by it here; ``inference_options()`` is the ``InferenceOptions`` each worker's Recognizer is built from
    (``align`` and ``tta`` keep the Recognizer's defaults: a batch job has no switch for them, and its record in
    ``_ferlab_batch.json`` stays as it was).  ``video_fps`` and ``segment_seconds`` are the job's own."""

    model: str = "default"
    detector: str | None = None          # None: the Recognizer's default detector
    min_face: int | None = None
    max_side: int | None = None
    margin: float | None = None
    video_fps: float | None = None       # frames sampled per second of video (None: every frame)
    segment_seconds: float = 60.0        # videos are split into units of this length
    on_no_face: str = "skip"             # images without a detected face: "skip" (no row) or "whole"
    search: str = DEFAULT_SEARCH         # the default detector's photo search (images, video frames)
    threads: int | None = None           # ONNX Runtime threads per worker (not part of the results)

    def __post_init__(self):
        for name in _INFERENCE_FIELDS:
            setattr(self, name, check_option(name, getattr(self, name)))
        if self.search is None:
            self.search = DEFAULT_SEARCH
        if self.on_no_face is None:
            self.on_no_face = "skip"

    def inference_options(self) -> InferenceOptions:
        """The options of each worker's Recognizer (``detector`` None: the default detector)."""
        return InferenceOptions(**{n: getattr(self, n) for n in _INFERENCE_FIELDS})

    def row_options(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "threads"}


#: the fields of ``BatchOptions`` that are inference options (``inference/options.py``)
_INFERENCE_FIELDS = ("model", "detector", "min_face", "max_side", "margin", "on_no_face", "search", "threads")


@dataclass
class UnitResult:
    key: str
    rows: list = field(default_factory=list)      # tuples in face_columns() order
    error: str | None = None
    error_kind: str | None = None
    frames: int = 0                               # frames decoded (videos)
    worker: str = ""


class UnitWorker:
    """Loads the model once; ``process(units)`` -> one ``UnitResult`` per unit (never raises for bad input)."""

    def __init__(self, options: BatchOptions | dict, model_sha256: str = "", worker_tag: str = ""):
        self.options = options if isinstance(options, BatchOptions) else BatchOptions(**options)
        self.rec = Recognizer.from_options(self.options.inference_options())
        self.classes = list(self.rec.classes)
        self.model_name = self.rec.classifier.name
        self.model_sha256 = model_sha256 or str(self.rec.card.get("sha256", ""))
        self.worker = worker_tag or f"pid{os.getpid()}"

    # -- rows ----------------------------------------------------------------------------------------------
    def _rows(self, source: str, kind: str, frame, time_s, faces) -> list[tuple]:
        return [FaceRecord(f, index=i, source=source, kind=kind, frame=frame, time_s=time_s, model=self.model_name,
                           model_sha256=self.model_sha256).table_row(self.classes) for i, f in enumerate(faces)]

    def predict_batch(self, images: list, whole: bool) -> list:
        """``Recognizer.predict_batch`` with the no-face policy of this call (images: the job's; video
        frames: never the whole frame)."""
        return self.rec.predict_batch(images, on_no_face="whole" if whole else "skip")

    # -- units ---------------------------------------------------------------------------------------------
    def process(self, units: list[Unit]) -> list[UnitResult]:
        results: dict[str, UnitResult] = {}
        images, loaded = [u for u in units if u.kind == "image"], []
        for u in images:
            try:
                loaded.append((u, self.rec.load(u.source)))
            except FerlabError as e:
                results[u.key] = UnitResult(u.key, error=str(e), error_kind=getattr(e, "kind", "error"),
                                            worker=self.worker)
        whole = self.options.on_no_face == "whole"
        if loaded:
            try:
                groups = self.predict_batch([img for _, img in loaded], whole)
            except FerlabError:
                groups = None  # one bad image spoils the batch: redo one by one to name it
            for i, (u, img) in enumerate(loaded):
                try:
                    faces = groups[i] if groups is not None else self.predict_batch([img], whole)[0]
                    results[u.key] = UnitResult(u.key, self._rows(u.source, "image", None, None, faces),
                                                worker=self.worker)
                except FerlabError as e:
                    results[u.key] = UnitResult(u.key, error=str(e), error_kind="recognition", worker=self.worker)
        for u in units:
            if u.kind == "video":
                results[u.key] = self.video_segment(u)
        return [results[u.key] for u in units]

    def frame_step(self, fps: float) -> int:
        vf = self.options.video_fps
        if not vf or vf <= 0 or not fps:
            return 1
        return max(1, int(round(fps / vf)))

    def video_segment(self, u: Unit, batch_frames: int = 8) -> UnitResult:
        """Frames [start, end) of a video; every ``frame_step`` th frame (counted from the file's first
        frame, so the sampled frames do not depend on the segmentation) is detected and classified."""
        import cv2


        try:
            cap = open_video(u.source)
        except FerlabError as e:
            return UnitResult(u.key, error=str(e), error_kind="video" if os.path.exists(u.source) else "missing",
                              worker=self.worker)
        try:
            fps = u.fps or cap.get(cv2.CAP_PROP_FPS)
            fps = fps if fps and math.isfinite(fps) and 0 < fps < 1000 else 25.0
            step = self.frame_step(fps)
            if u.start > 0:
                cap.set(cv2.CAP_PROP_POS_FRAMES, u.start)
            rows: list[tuple] = []
            pending: list[tuple[int, np.ndarray]] = []
            n, idx = 0, u.start

            def flush() -> None:
                groups = self.predict_batch([f for _, f in pending], whole=False)
                for (fi, _), faces in zip(pending, groups):
                    rows.extend(self._rows(u.source, "video", fi, round(fi / fps, 4), faces))
                pending.clear()

            while u.end < 0 or idx < u.end:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                n += 1
                if idx % step == 0:
                    pending.append((idx, frame))
                    if len(pending) >= batch_frames:
                        flush()
                idx += 1
            if pending:
                flush()
            if n == 0 and u.start == 0:
                return UnitResult(u.key, error=f"{u.source}: cannot read as a video (no frame could be decoded)",
                                  error_kind="video", worker=self.worker)
            return UnitResult(u.key, rows, frames=n, worker=self.worker)
        except FerlabError as e:
            return UnitResult(u.key, error=f"{u.source}: {e}", error_kind="recognition", worker=self.worker)
        finally:
            cap.release()


class Predictor:
    """A Ray Data batch function: image batches in, one row per face out (plug ferlab into your pipeline).

        import ray, ferlab.batch
        ds = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)   # columns: bytes, path
        faces = ds.map_batches(ferlab.batch.Predictor, fn_constructor_kwargs={"model": "default"},
                               concurrency=8, batch_size=32, num_cpus=1)
        faces.write_parquet("s3://bucket/faces/")

    Input columns: ``path`` (read here), or ``bytes`` (already read, e.g. ``read_binary_files``) with
    ``path`` as the name, or ``image`` (decoded arrays).  Output: the face-row columns of ``ferlab batch``
    (``face_columns``) plus ``error`` (null, or why this input gave no rows: it then has one row with
    nulls).  The model is loaded once per actor; keyword arguments are those of ``BatchOptions``.
    """

    def __init__(self, **options):
        options.setdefault("threads", 1)
        self.worker = UnitWorker(BatchOptions(**options))
        self.columns = face_columns(self.worker.classes)

    def __call__(self, batch: dict) -> dict:
        n = len(next(iter(batch.values()))) if batch else 0
        names = [str(p) for p in batch["path"]] if "path" in batch else [f"row{i}" for i in range(n)]
        w = self.worker
        rows, errors = [], []
        for i in range(n):
            try:
                if "image" in batch:
                    img = w.rec.load(np.asarray(batch["image"][i]))
                elif "bytes" in batch:
                    img = decode_image(bytes(batch["bytes"][i]), name=names[i],
                                       mode="bgr" if w.rec.needs_color else "gray")
                else:
                    img = w.rec.load(names[i])
                faces = w.predict_batch([img], w.options.on_no_face == "whole")[0]
            except FerlabError as e:
                rows.append(FaceRecord(None, source=names[i], model=w.model_name,
                                       model_sha256=w.model_sha256).table_row(w.classes))
                errors.append(str(e))
                continue
            new = w._rows(names[i], "image", None, None, faces)
            rows.extend(new)
            errors.extend([None] * len(new))
        out = {c: [r[j] for r in rows] for j, c in enumerate(self.columns)}
        out["error"] = errors
        return {k: _column(k, v) for k, v in out.items()}


def _column(name: str, values: list):
    if name == "keypoints":
        arr = np.empty(len(values), dtype=object)
        arr[:] = [np.asarray(v if v is not None else [], np.float32) for v in values]
        return arr
    return np.array(values, dtype=object) if any(v is None for v in values) or not values else np.array(values)
