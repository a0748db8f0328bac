"""Checkpoints written atomically in weights-only formats (loading: ``ferlab.models.weights``, which never
runs code from the file)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import FerlabError
from ..io import atomic_write


def save_weights(model: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata or {}))


def save_training_state(state: dict, path: str | Path) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise FerlabError(f"{path}: cannot resume from this checkpoint ({str(e)[:120]})") from None
