"""ferlab features RUN --data CSV --classifier svm|rf|logreg|all --out DIR"""

from __future__ import annotations

from ._options import SEED, check_output, int_in


def add_parser(sub) -> None:
    p = sub.add_parser("features", help="a trained CNN's penultimate-layer features + linear SVM / random forest / "
                                        "logistic regression, compared with the CNN alone",
                       description="Fit on Training, choose C / leaf size on PublicTest, report on PrivateTest. "
                                   "Example: ferlab features runs/fernet --classifier all --out runs/fernet/features")
    p.add_argument("run", help="run directory (ferlab train --out)")
    p.add_argument("--data", help="dataset (default: the run's training data)")
    p.add_argument("--classifier", default="all",
                   help="svm, rf, logreg, all, or a comma-separated list (default all)")
    p.add_argument("--val", default="PublicTest", help="selection split (default PublicTest; never PrivateTest)")
    p.add_argument("--split", default="PrivateTest", help="test split to report on (default PrivateTest)")
    p.add_argument("--out", help="output folder (default RUN/features)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--bootstrap", type=int_in(0, 100_000), default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--no-report", action="store_true", help="only summary.json (no plots / HTML)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..features import run_features
    from ..io import typed_command

    check_output(args.out, "--out", folder=True)

    out = args.out or str(Path(args.run) / "features")
    kinds = "all" if args.classifier == "all" else [k.strip() for k in args.classifier.split(",") if k.strip()]
    command = typed_command() or None
    s = run_features(args.run, args.data, kinds, out=out, val_split=args.val, test_split=args.split, seed=args.seed,
                     bootstrap=args.bootstrap, report=not args.no_report, command=command)
    print(f"{'model':<8} {'param':>18}  {s['selection_split'] + ' acc':>14}  {s['test_split'] + ' acc':>15}  "
          f"bal.acc  macro-F1")
    for name, r in s["results"].items():
        param = ", ".join(f"{k}={v:g}" for k, v in (r.get("param") or {}).items()) or "-"
        print(f"{name:<8} {param:>18}  {r['val_accuracy']:14.2%}  {r['accuracy']:15.2%}  "
              f"{r['balanced_accuracy']:7.2%}  {r['macro_f1']:8.2%}")
    print(f"summary: {Path(out) / 'summary.json'}")
    return 0
