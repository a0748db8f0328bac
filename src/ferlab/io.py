"""Files on the ground floor: atomic writes, sha256 digests, portable paths, the command line as typed.

Stdlib only.  Every file ferlab writes goes through ``atomic_write`` (a temporary beside the target, then a
rename), so a crash never leaves half a file; ``file_digest`` is the sha256 that model cards record;
``portable_path`` keeps machine-specific prefixes out of committed results; ``command_line`` /
``typed_command`` are the one way a result records the command that produced it.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shlex
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

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


def command_line(words: Iterable[object]) -> str:
    """``ferlab WORD...`` quoted for a POSIX shell (the command a result records)."""
    return shlex.join(["ferlab", *map(str, words)])


def typed_command(subcommand: str | None = None) -> str:
    """The command as typed, when this process is the ``ferlab`` command (and runs ``subcommand``, when
    given); else "" (a library call: the caller rebuilds the command from its arguments)."""
    argv = sys.argv
    if not argv or Path(argv[0]).name != "ferlab":
        return ""
    if subcommand is not None and subcommand not in argv[1:]:
        return ""
    return command_line(argv[1:])
