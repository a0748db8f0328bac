"""Checkpoints written atomically in weights-only formats; loading never runs code from the file."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import FerlabError
from ..io import atomic_write


def save_weights(model: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata or {}))


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a weights-only torch file (never unpickles code)."""
    path = Path(path)
    if not path.is_file():
        raise FerlabError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise FerlabError(f"{path}: not a readable weights file ({type(e).__name__}: {str(e)[:120]})") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise FerlabError(f"{path}: holds no state dict")
    return obj


def save_training_state(state: dict, path: str | Path) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise FerlabError(f"{path}: cannot resume from this checkpoint ({str(e)[:120]})") from None
