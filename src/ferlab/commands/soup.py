"""ferlab soup RUN RUN [RUN...] --out DIR: average the weights of runs trained from one starting point."""

from __future__ import annotations

from ._options import add_progress, check_output, progress_of


def add_parser(sub) -> None:
    p = sub.add_parser("soup", help="average the weights of runs fine-tuned from one start into one network "
                                    "(a weight soup; export it like any run)",
                       description="Example: ferlab soup runs/kd3a runs/kd3b --out runs/kd3_soup. The runs must "
                                   "share the model, input size, labels, data and starting weights (init). The "
                                   "soup and each run are scored on the runs' validation split.")
    p.add_argument("runs", nargs="+", help="run directories (ferlab train --out), two or more")
    p.add_argument("--out", required=True, help="the soup's run directory")
    add_progress(p, default=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.soup import describe, make_soup

    check_output(args.out, "--out", folder=True)
    print(describe(make_soup(args.runs, args.out, progress=progress_of(args))))
    return 0
