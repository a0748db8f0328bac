"""Loading weights: safetensors or weights-only torch files; loading never runs code from the file.

The models' own floor (``models.transfer`` loads pretrained weights with it, ``training`` loads runs); the
writers (``save_weights``, training state) are in ``training/checkpoint.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import FerlabError


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
