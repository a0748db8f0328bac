"""Atomic writes and the on-disk cache of parsed datasets (keyed by file content)."""

from __future__ import annotations

import glob
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: temporaries older than this are swept whatever their process (a crashed run on another machine)
STALE_TMP_SECONDS = 24 * 3600


def current_umask() -> int:
    """The process umask, read without changing it (``/proc/self/status``; else set-and-restore)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def sweep_stale_tmp(path: str | os.PathLike) -> int:
    """Remove the temporaries of ``path`` left by a killed writer (``.NAME.PID.XXXX.tmp`` whose process is
    gone, or any older than ``STALE_TMP_SECONDS``).  Returns how many were removed."""
    import time

    path = Path(path)
    removed = 0
    try:
        candidates = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return 0
    for tmp in candidates:
        parts = tmp.name[len(path.name) + 2:].split(".")
        pid = int(parts[0]) if parts and parts[0].isdigit() else -1
        try:
            old = time.time() - tmp.stat().st_mtime > STALE_TMP_SECONDS
            if pid == os.getpid():
                continue
            if old or (pid > 0 and not _pid_alive(pid)):
                tmp.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``.

    A crash or error leaves ``path`` untouched and no temporary file behind; a SIGKILL (nothing runs) can
    leave ``.NAME.PID.XXXX.tmp``, which the next write of the same ``path`` sweeps (``sweep_stale_tmp``).
    The file gets the mode any new file would (0666 less the umask) or keeps the mode of the file it
    replaces, not ``mkstemp``'s 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_tmp(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


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


def portable_path(path: str | os.PathLike) -> str:
    """``path`` as recorded in committed results: relative to the working directory when it lies inside it or
    beside it (``src/ferlab/zoo/default.onnx``, ``../shared/datasets/...``), else as given, so that no
    machine-specific absolute prefix of the project ends up in a report."""
    p = str(path)
    if not os.path.isabs(p):
        return p
    try:
        rel = os.path.relpath(p)
    except ValueError:  # another drive on Windows
        return p
    return rel if rel.split(os.sep)[:2].count("..") <= 1 else p
