"""ferlab evaluate MODEL [DATA] --split PrivateTest --tta none|flip|tencrop --out DIR [--labels ...] [--record-card]"""

from __future__ import annotations

from pathlib import Path

from ._options import add_progress, check_output, int_in, progress_of

DEFAULT_DATA = Path("..") / "shared" / "datasets" / "fer2013" / "fer2013.csv.gz"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate a run or an ONNX model on a split: metrics, plots and one HTML report",
        description="Evaluate a model on one split and write metrics.json, plots and report.html. "
                    "Example: ferlab evaluate runs/fernet --tta flip")
    p.add_argument("model", help="run directory (torch, needs the [train] extra), bundled model name or .onnx file")
    p.add_argument("data", nargs="?", help=f"dataset file or folder (default {DEFAULT_DATA} if it exists)")
    p.add_argument("--split", default="PrivateTest", help="split to evaluate (default PrivateTest)")
    p.add_argument("--tta", choices=["none", "flip", "tencrop"], default="none",
                   help="test-time augmentation: none, flip (image + mirror), tencrop (corners + centre, mirrored)")
    p.add_argument("--out", help="report folder (default RUN/eval-<split>-<tta>/ for a run, "
                                 "eval/<model>-<split>-<tta>/ for an ONNX model)")
    p.add_argument("--labels", help="label scheme of DATA: fer2013 | ferplus-majority (default: the model's)")
    p.add_argument("--votes", help="FER+ vote file for --labels ferplus-* (default: ../ferplus/fer2013new.csv "
                                   "beside the data folder)")
    p.add_argument("--clean-only", action="store_true",
                   help="evaluate only the rows without a pixel-identical copy in Training")
    p.add_argument("--bootstrap", type=int_in(0, 100_000), default=1000, help="bootstrap resamples for the 95%% CI (default 1000)")
    p.add_argument("--record-card", action="store_true",
                   help="write the headline metrics into the ONNX model's card (metrics.<split>_<tta>); "
                        "bundled models' cards are read-only: copy the .onnx and .json elsewhere first")
    add_progress(p, default=True)
    p.set_defaults(func=run)


def _command_line(args) -> str | None:
    """The command as typed, when ferlab was started from a shell (else the library rebuilds it)."""
    from ..io import typed_command

    return typed_command("evaluate") or None


def run(args) -> int:
    from ..errors import FerlabError
    from ..evaluation.evaluate import evaluate

    if args.record_card:
        from ..zoo import is_bundled

        if is_bundled(args.model):
            raise FerlabError(f"{args.model}: --record-card would rewrite a bundled model's card inside the "
                              "installed package (read-only); copy its .onnx and .json to a folder and evaluate "
                              "that copy", "bad_option")
    check_output(args.out, "--out", folder=True)
    data = args.data
    if data is None:
        if not DEFAULT_DATA.exists():
            raise FerlabError(f"no DATA given and the default {DEFAULT_DATA} does not exist here: "
                              "give the dataset file, e.g. ferlab evaluate MODEL path/to/fer2013.csv.gz")
        data = str(DEFAULT_DATA)
    res = evaluate(args.model, data, split=args.split, tta=args.tta, out=args.out, labels=args.labels,
                   clean_only=args.clean_only, votes=args.votes, bootstrap=args.bootstrap,
                   record_card=args.record_card, command=_command_line(args), progress=progress_of(args))
    print(format_summary(res))
    if args.record_card:
        key = f"{args.split}_{args.tta}" + ("_clean" if args.clean_only else "")
        print(f"recorded on the model card: metrics.{key}")
    return 0


def format_summary(res) -> str:
    m = res.meta
    pct = lambda x: "n/a" if x is None or x != x else f"{100 * x:.2f}%"  # noqa: E731
    ci = f"  (95% CI {100 * res.accuracy_ci[0]:.1f}-{100 * res.accuracy_ci[1]:.1f}%)" if res.accuracy_ci else ""
    lines = [f"{m.get('model')} ({m.get('model_kind')}) on {m.get('split')}: {res.n} images, TTA {m.get('tta')}",
             f"  accuracy           {pct(res.accuracy)}{ci}"]
    if res.clean_accuracy is not None:
        lines.append(f"  clean accuracy     {pct(res.clean_accuracy)}  ({res.clean_n} rows with no copy in Training)")
    lines += [f"  balanced accuracy  {pct(res.balanced_accuracy)}",
              f"  macro F1           {pct(res.macro['f1'])}",
              f"  ECE / NLL          {res.ece:.3f} / {res.nll:.3f}",
              "  recall per class:"]
    width = max(len(c) for c in res.classes)
    for c, r, s in zip(res.classes, res.recall, res.support):
        bar = "#" * int(round(20 * r)) if r == r else ""
        lines.append(f"    {c:<{width}}  {pct(r):>7}  {bar:<20} n={int(s)}")
    for note in res.notes:
        lines.append(f"  note: {note}")
    if m.get("report"):
        lines.append(f"report: {m['report']}")
    return "\n".join(lines)
