"""Option conventions shared by every subcommand: checked numbers, writable outputs, ``-`` for stdout and the
one progress switch.

Every numeric option is parsed by ``int_in`` / ``float_in`` (type and range checked by argparse: one line,
exit 2, before anything is loaded); every output path is checked by ``check_output`` *before* the work that
fills it (a timeline written after a whole video must not fail at the end); ``--json -`` and ``--csv -``
write to stdout.  ``add_progress`` gives each long-running command the same ``--progress/--no-progress``
switch (default: on when stderr is a terminal); the old spellings stay as hidden aliases.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import OutputError
from ..inference.options import FIELD, range_text
from ..inference.options import SEARCH_CHOICES as SEARCH_CHOICES

STDOUT = "-"


def _number(text: str, kind: type) -> float:
    t = str(text).strip()
    try:
        v = float(t) if kind is float else int(t, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'a number' if kind is float else 'an integer'}") from None
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """argparse ``type``: an integer in [lo, hi] (``hi`` None: no upper bound)."""
    def parse(text: str) -> int:
        v = int(_number(text, int))
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{text!r} must be an integer {range_text(lo, hi)}")
        return v

    parse.__name__ = "integer"
    return parse


def float_in(lo: float, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
             ) -> Callable[[str], float]:
    """argparse ``type``: a finite number in the interval (``lo_open``/``hi_open``: bound excluded)."""
    def parse(text: str) -> float:
        v = _number(text, float)
        bad = v < lo or (lo_open and v == lo) or (hi is not None and (v > hi or (hi_open and v == hi)))
        if bad:
            raise argparse.ArgumentTypeError(f"{text!r} must be a number {range_text(lo, hi, lo_open, hi_open)}")
        return v

    parse.__name__ = "number"
    return parse


def _type_of(name: str) -> Callable[[str], float]:
    """The argparse ``type`` of a numeric row of ``inference.options.FIELDS`` (its range, written once)."""
    f = FIELD[name]
    return int_in(int(f.lo), None if f.hi is None else int(f.hi)) if f.kind == "int" else float_in(f.lo, f.hi)


#: the usual ranges, named once (those of the inference options come from their table, ``inference/options.py``)
THREADS = _type_of("threads")
PIXELS = _type_of("max_side")
MIN_FACE = _type_of("min_face")
MARGIN = _type_of("margin")
SMOOTHING = float_in(0.0, 0.99)
COUNT = int_in(1)
SEED = int_in(0, 2**32 - 1)
#: ``SEARCH_CHOICES`` (imported above): the default detector's photo search, ``inference.options.SEARCH_CHOICES``,
#: kept equal to ``ferlab.inference.blazeface.SEARCH_MODES`` by a test (``inference/options.py`` is stdlib only,
#: so ``--help`` stays light)


def add_inference_options(p: argparse.ArgumentParser, which: tuple[str, ...], *, where: str = "each image",
                          notes: dict[str, str] | None = None, defaults: dict | None = None,
                          helps: dict[str, str] | None = None) -> None:
    """The flags of the inference options ``which`` (names of ``inference.options.FIELDS``, in this order), read
    from the table: flag, type and range (``int_in`` / ``float_in``), choices, default and help.  ``where``
    fills the search help's ``{where}``; ``notes[name]`` ends a help text; ``defaults[name]`` is a command's own
    default (batch: ``--detector`` None, the Recognizer's); ``helps[name]`` replaces a help where a command
    means something narrower by the flag (written beside the command, which says why)."""
    notes, defaults, helps = notes or {}, defaults or {}, helps or {}
    for name in which:
        f = FIELD[name]
        text = helps.get(name, f.help).format(where=where) + notes.get(name, "")
        kw: dict = {"default": defaults.get(name, f.default), "help": text}
        if f.metavar:
            kw["metavar"] = f.metavar
        if f.kind == "bool":
            p.add_argument(f.flag, dest=name, action="store_true", **kw)
            continue
        if f.kind == "choice":
            kw["choices"] = list(f.choices)
        elif f.kind in ("int", "float"):
            kw["type"] = _type_of(name)
        p.add_argument(f.flag, **kw)


def add_search(p: argparse.ArgumentParser, where: str, note: str = "") -> None:
    """The ``--search`` option of the commands that run the photo search on ``where`` (predict, serve, batch, video):
    the table's row (``inference.options.FIELDS``; a bad value is argparse's one line, exit 2); ``note`` ends
    the help text."""
    add_inference_options(p, ("search",), where=where, notes={"search": note})


def check_output(path: str | os.PathLike | None, option: str, *, folder: bool = False,
                 allow_stdout: bool = False) -> None:
    """Refuse an output path that cannot be written, before any work: an existing folder where a file is
    wanted (or a file where a folder is), a parent that is a file, a place where no file can be created
    (read-only folder, /proc, no permission).  Probes by creating and removing a temporary file in the
    nearest existing folder, so it is right for root and for read-only mounts alike.  ``-`` is stdout."""
    if path is None:
        return
    text = os.fspath(path)
    if not text.strip():  # ``--json ''`` would otherwise be taken for "no output" and write nothing
        raise OutputError(f"{option}: empty file name; give a file name{' or - for stdout' if allow_stdout else ''}")
    if text == STDOUT:
        if allow_stdout:
            return
        raise OutputError(f"{option} -: this output cannot go to stdout; give a file name")
    p = Path(text)
    if folder:
        if p.exists() and not p.is_dir():
            raise OutputError(f"{option} {p}: needs a folder, and this is a file")
    elif p.is_dir():
        raise OutputError(f"{option} {p}: is a folder; give a file name")
    elif p.exists() and not p.is_file():
        raise OutputError(f"{option} {p}: is not a regular file")
    probe_dir = p if folder and p.is_dir() else p.parent
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise OutputError(f"{option} {p}: {probe_dir} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ferlab-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OutputError(f"{option} {p}: cannot write in {probe_dir} ({e.strerror or type(e).__name__})") from None


def write_output(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (honouring the umask), or to stdout when ``path`` is ``-``."""
    if os.fspath(path) == STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from ..io import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def add_progress(p: argparse.ArgumentParser, default: bool | None = None, aliases: tuple[str, ...] = (),
                 note: str = "") -> None:
    """The one progress switch: ``--progress`` / ``--no-progress`` (default: ``default``; None = on when
    stderr is a terminal).  ``aliases``: old spellings of ``--no-progress`` kept working, hidden from help;
    ``note`` ends the help text."""
    p.add_argument("--progress", dest="progress", action=argparse.BooleanOptionalAction, default=default,
                   help="progress bars on stderr (default: " + (
                       "when stderr is a terminal" if default is None else "on" if default else "off") + f"){note}")
    for alias in aliases:
        p.add_argument(alias, dest="progress", action="store_false", help=argparse.SUPPRESS)


def progress_of(args) -> bool:
    value = getattr(args, "progress", None)
    if value is None:
        try:
            return sys.stderr.isatty()
        except (AttributeError, ValueError):
            return False
    return bool(value)
