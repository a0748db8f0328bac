"""ferlab compare RUN_DIR... [--out table.csv|table.md]: training runs side by side.

The table (config differences, the kept epoch and its validation numbers, every evaluation found in the run
directories, time and speed) is built by ``ferlab.evaluation.compare``; this module parses the arguments,
prints it and writes ``--out``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ._options import check_output


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare training runs: config differences, validation and test metrics, "
                                       "time and speed",
                       description="Compare training runs side by side. Example: ferlab compare runs/* --out runs.md")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (ferlab train --out)")
    p.add_argument("--out", help="also write the table to a .csv or .md file")
    p.add_argument("--sort", default="", help="column to sort by, descending (e.g. 'val acc')")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import FerlabError
    from ..evaluation.compare import (
        build_table,
        collect_runs,
        format_csv,
        format_markdown,
        format_text,
        sort_table,
    )
    from ..evaluation.report import write_file

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".csv", ".md"):
        raise FerlabError(f"{out}: --out must end in .csv or .md")
    check_output(out, "--out")
    runs, skipped = collect_runs(args.runs)
    for note in skipped:
        print(f"ferlab compare: skipped {note}", file=sys.stderr)
    cols, table = build_table(runs)
    if args.sort:
        sort_table(cols, table, args.sort)
    print(format_text(cols, table))
    if out is not None:
        text = format_csv(cols, table) if out.suffix.lower() == ".csv" else format_markdown(cols, table)
        write_file(out, text.encode())
        print(f"table: {out}")
    return 0
