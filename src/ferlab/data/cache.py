"""The on-disk cache of parsed datasets (keyed by file content; written with ``ferlab.io.atomic_write``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io import atomic_write, file_digest


def cache_dir() -> Path:
    return Path(os.environ.get("FERLAB_CACHE", Path.home() / ".cache" / "ferlab"))


def cache_path_for(path: str | os.PathLike, tag: str) -> Path:
    """Where the parsed form of ``path`` is cached: $FERLAB_CACHE (default ~/.cache/ferlab), never beside
    the data (dataset folders are inputs, often shared or read-only).  The name holds the file's sha256
    and size, so an edited file is parsed again."""
    path = Path(path)
    st = path.stat()
    key = f"{file_digest(path)[:16]}-{st.st_size}"
    return cache_dir() / f"{path.name}.{tag}.{key}.npz"


def load_npz(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        return None


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    try:
        atomic_write(path, write)
    except OSError:
        pass  # a cache that cannot be written only costs time


