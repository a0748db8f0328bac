"""Knowledge distillation: teacher logits computed once, cached on disk, looked up by sample id, or a model
run on every augmented batch (``OnnxTeacher``: ``teacher: default`` or ``teacher: path.onnx`` in a recipe).

A teacher file (``.npz``) holds, for the samples of ONE split of one dataset (the student's training split):
    ids        (N,) str     the dataset's stable sample ids (CSV row index for FER2013)
    logits     (N, C) f16   log of the teachers' mean probability (soft voting; with ``tta`` averaged views)
    classes    (C,) str     class names, in order
    meta       JSON str     teachers, TTA, dataset file name and digest, split, command

It is small (28,709 x 7 float16 = 0.4 MB) and committed, so no teacher is ever retrained to re-run a student.
The student's loss is ``(1 - kd_alpha) * CE(labels, smoothed) + kd_alpha * T^2 * KL(teacher_T || student_T)``
(Hinton et al., 2015), where samples without a teacher row (auxiliary or synthetic data) get the label term
only.  Only the training split is ever passed through the teachers: PublicTest selects, PrivateTest reports.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import load_dataset
from ..errors import FerlabError
from ..inference.classifier import OnnxClassifier
from ..inference.crop import FaceCropper
from ..io import atomic_write, file_digest, portable_path


def teacher_logits(members: list[str], data: str, split: str = "Training", labels: str = "fer2013",
                   tta: str = "flip", progress: bool = True, amp: str = "auto") -> dict[str, np.ndarray]:
    """Soft-voting teacher logits (torch, ``tta`` views averaged; ``amp`` as in recipes: ``auto`` takes bf16 only
    where it measures faster on this CPU, ``forward.resolve_amp``) of run directories on ``split``."""
    from .build import load_run
    from .forward import predict_logits

    if split == "PrivateTest":
        raise FerlabError("teachers run on the student's training split only, never on PrivateTest")
    if not members:
        raise FerlabError("give at least one teacher run directory")
    ds = load_dataset(data, labels=labels, cropper=FaceCropper()).by_split(split)
    probs = []
    for m in members:
        model, summary, cfg = load_run(m)
        if [c.lower() for c in summary["classes"]] != [c.lower() for c in ds.classes]:
            raise FerlabError(f"{m}: predicts {', '.join(summary['classes'])}; the data has {', '.join(ds.classes)}")
        if progress:
            print(f"teacher {m}: {len(ds)} {split} images, tta {tta}", flush=True)
        probs.append(np.exp(predict_logits(model, ds.images, cfg.input_size, tta=tta, amp=amp)))
    p = np.mean(probs, axis=0)
    return {"ids": ds.ids.astype(str), "logits": np.log(np.clip(p, 1e-8, None)).astype(np.float16),
            "classes": np.array(ds.classes, dtype=str),
            "meta": json.dumps({"teachers": [portable_path(m) for m in members], "tta": tta, "amp": amp,
                                "split": split, "labels": labels, "data": Path(data).name, "data_sha256": file_digest(data),
                                "train_accuracy": round(float((p.argmax(1) == ds.labels).mean()), 4)})}


def save_teacher(path: str | os.PathLike, arrays: dict) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(path, write)


def load_teacher(path: str | os.PathLike, ids: np.ndarray, classes) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher logits (N, C) float32, has_teacher (N,) bool) aligned with the samples ``ids``."""
    p = Path(path)
    if not p.is_file():
        raise FerlabError(f"{p}: no such teacher file (make one with `ferlab teacher RUN... --out {p.name}`)")
    try:
        with np.load(p, allow_pickle=False) as z:
            t_ids, t_logits, t_classes = z["ids"].astype(str), z["logits"].astype(np.float32), list(z["classes"])
    except (OSError, ValueError, KeyError) as e:
        raise FerlabError(f"{p}: not a teacher file ({e})") from None
    if [c.lower() for c in t_classes] != [c.lower() for c in classes]:
        raise FerlabError(f"{p}: teacher classes {', '.join(t_classes)} differ from the data's {', '.join(classes)}")
    where = {s: i for i, s in enumerate(t_ids)}
    rows = np.array([where.get(str(s), -1) for s in ids])
    has = rows >= 0
    if not has.any():
        raise FerlabError(f"{p}: no training sample has a teacher row (teacher made for another split or dataset?)")
    out = np.zeros((len(ids), len(classes)), np.float32)
    out[has] = t_logits[rows[has]]
    return torch.from_numpy(out), torch.from_numpy(has)


def is_model_teacher(teacher: str) -> bool:
    """A teacher given as a model (a bundled name or an ``.onnx`` file) rather than cached logits (``.npz``)."""
    return bool(teacher) and not teacher.lower().endswith(".npz")


class OnnxTeacher:
    """An exported model (a bundled name or an ``.onnx`` file, int8 is fine) run on every augmented batch: the
    student is taught on the very views it sees (the consistent teaching of Beyer et al., 2022), where cached
    logits (``load_teacher``) were computed once on the clean, centred image.  The teacher's graph takes the
    card's 48x48 grey levels and centre-crops them itself, so a ``crop`` x ``crop`` view is padded back to 48
    by edge replication: the graph's crop then gives back exactly the student's view where ``crop`` is the
    teacher's crop; a student with a smaller input (a 40 px view for a 44 px teacher) is taught on its view
    with the missing border edge-replicated, so both still see the same pixels.  Costs one int8 forward pass
    a batch (about 25 ms for 64 faces for ``default`` on one core); runs on the training split only, as every
    teacher here."""

    def __init__(self, model: str, classes, crop: int, threads: int = 1):
        self.clf = OnnxClassifier(model, threads=threads, calibrated=False)
        if [c.lower() for c in self.clf.classes] != [c.lower() for c in classes]:
            raise FerlabError(f"teacher {model}: predicts {', '.join(self.clf.classes)}; "
                              f"the data has {', '.join(classes)}")
        inner = self.clf.card.get("crop_inside_graph") or self.clf.input_size
        if crop > inner or (self.clf.input_size - crop) % 2:
            raise FerlabError(f"teacher {model} crops {inner} px inside its graph; the student's views are {crop} px "
                              f"(a teacher is shown views of its crop or smaller, by an even number of pixels)")
        self.pad = (self.clf.input_size - crop) // 2

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of augmented views (N, 1, crop, crop), grey levels 0-255."""
        x = views[:, 0].detach().float().numpy()
        if self.pad:
            x = np.pad(x, ((0, 0), (self.pad, self.pad), (self.pad, self.pad)), mode="edge")
        return torch.from_numpy(self.clf.logits(x))


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the samples in ``mask``."""
    t = temperature
    log_p_s = F.log_softmax(student.float() / t, dim=1)
    p_t = F.softmax(teacher.float() / t, dim=1)
    per = (p_t * (p_t.clamp_min(1e-12).log() - log_p_s)).sum(1) * t * t
    if mask is None:
        return per.mean()
    m = mask.float()
    return (per * m).sum() / m.sum().clamp_min(1.0)
