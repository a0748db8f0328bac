"""The expression classifier on ONNX Runtime (no torch).

The exported graph takes (N, 1, S, S) float32 grey levels in [0, 255] and does its own centre crop and
normalisation (see ``ferlab.training.export``); it returns logits.  Probabilities are
``softmax(logits / temperature)`` with the temperature from the model card.
"""

from __future__ import annotations

import os

import numpy as np

from ..calibration import softmax
from ..errors import FerlabError
from ..zoo import resolve
from .session import MAX_THREADS, cpu_session, resolve_threads  # noqa: F401  (MAX_THREADS: the limit callers see)


class OnnxClassifier:
    """``OnnxClassifier("default").predict_proba(faces)`` with faces uint8 (N, S, S) grayscale crops."""

    def __init__(self, model: str | os.PathLike = "default", threads: int | None = None, calibrated: bool = True,
                 spin: bool = True):
        """``spin``: see ``session.cpu_session`` (False when it takes turns with a face detector)."""
        self.path, self.card = resolve(model)
        self.name = self.card.get("name", str(model))
        self.classes: list[str] = list(self.card["classes"])
        self.input_size: int = int(self.card["input_size"])
        self.temperature: float = float(self.card.get("temperature", 1.0)) if calibrated else 1.0
        self.threads = resolve_threads(threads)
        self.session = cpu_session(self.path, self.threads, "ONNX model", spin=spin)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        side = inp.shape[-1] if len(inp.shape) == 4 else None
        if isinstance(side, int) and side != self.input_size:  # the card must describe the graph it seals
            raise FerlabError(f"{self.path}: the card says input_size {self.input_size} but the graph takes "
                              f"{side}x{side} images", "bad_card")

    def logits(self, faces: np.ndarray, batch_size: int = 256) -> np.ndarray:
        x = np.asarray(faces)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != (self.input_size, self.input_size):
            raise FerlabError(f"faces must be (N, {self.input_size}, {self.input_size}) grayscale, got {x.shape}")
        out = []
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size, None].astype(np.float32)
            out.append(self.session.run(None, {self.input_name: xb})[0])
        if not out:
            return np.zeros((0, len(self.classes)), np.float32)
        return np.concatenate(out).astype(np.float32)

    def predict_proba(self, faces: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return softmax(self.logits(faces, batch_size), self.temperature).astype(np.float32)
