"""The ``ferlab`` command: a thin layer that parses arguments and calls the library.

Each subcommand lives in ``ferlab.commands.<name>`` and exposes ``add_parser(subparsers)``; its handler
imports what it needs when it runs, so ``ferlab --help`` and ``ferlab predict`` stay light (no torch).
User mistakes (``FerlabError``) print one line and exit with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import FerlabError

#: subcommand modules under ferlab.commands, in --help order
COMMANDS = ("data", "train", "evaluate", "compare", "models", "export", "predict", "video", "webcam", "serve",
            "site", "tune", "ensemble", "soup", "features", "teacher", "batch")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``ferlab predict: error: argument --margin: ...``), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="ferlab", description="Facial expression recognition: data, training, "
                                     "evaluation and fast offline inference.")
    parser.add_argument("--version", action="version", version=f"ferlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith(f"{__package__}.commands"):
                continue  # subcommand not built yet
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        rc = args.func(args)
    except FerlabError as e:
        print(f"ferlab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `ferlab models | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except KeyboardInterrupt:
        print(f"ferlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"ferlab {args.command}: error: out of memory", file=sys.stderr)
        return 2
    except OSError as e:  # a file that cannot be read or written, named, in one line
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"ferlab {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        extra = {"torch": "train", "sklearn": "train", "safetensors": "train", "onnx": "train",
                 "fastapi": "serve", "uvicorn": "serve", "imblearn": "train", "optuna": "train"}.get(
            (e.name or "").split(".")[0])
        if extra:
            print(f"ferlab {args.command}: error: this command needs the [{extra}] extra: "
                  f"pip install 'ferlab[{extra}]' (missing module {e.name})", file=sys.stderr)
            return 2
        raise
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
