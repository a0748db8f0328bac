"""ferlab ensemble RUN_OR_ONNX... --data CSV --split PublicTest|PrivateTest [--weights W...] [--export out.onnx]
[--out DIR]"""

from __future__ import annotations

from ._options import add_progress, check_output, float_in, int_in, progress_of


def add_parser(sub) -> None:
    p = sub.add_parser("ensemble", help="soft-voting ensemble of trained runs / ONNX models: evaluate it (and "
                                        "each member) and optionally export it as one ONNX graph",
                       description="Soft voting: the weighted mean of the members' class probabilities. Example: "
                                   "ferlab ensemble runs/a runs/b model.onnx --data fer2013.csv.gz --split "
                                   "PrivateTest --export exported/ensemble.onnx")
    p.add_argument("members", nargs="+", help="run directories and/or .onnx models (or bundled model names)")
    p.add_argument("--data", required=True, help="dataset (fer2013 CSV, plain or .gz)")
    p.add_argument("--split", default="PublicTest", help="split to evaluate on (default PublicTest)")
    p.add_argument("--weights", nargs="+", type=float_in(0, 1e6), help="one non-negative weight per member (default equal)")
    p.add_argument("--labels", help="label scheme of the dataset (default: the members', FER+ -> majority)")
    p.add_argument("--export", metavar="OUT.onnx", help="also write the ensemble as one ONNX graph + model card "
                                                        "(temperature fitted on PublicTest)")
    p.add_argument("--name", help="model name on the exported card (default: the --export file's stem)")
    p.add_argument("--out", help="report folder (metrics.json, plots, report.html, ensemble.json)")
    p.add_argument("--bootstrap", type=int_in(0, 100_000), default=1000,
                   help="bootstrap resamples for the 95%% intervals")
    add_progress(p, default=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..ensemble import evaluate_ensemble, export_ensemble
    from ..io import typed_command

    check_output(args.out, "--out", folder=True)
    check_output(args.export, "--export")

    command = typed_command() or None
    s = evaluate_ensemble(args.members, args.data, args.split, weights=args.weights, out=args.out,
                          labels=args.labels, bootstrap=args.bootstrap, progress=progress_of(args),
                          command=command)
    width = max([8] + [len(m["name"]) for m in s["members"]])
    print(f"{'member':<{width}}  weight  accuracy  bal.acc  macro-F1")
    for m in s["members"]:
        print(f"{m['name']:<{width}}  {m['weight']:6.3f}  {m['accuracy']:8.2%}  {m['balanced_accuracy']:7.2%}  "
              f"{m['macro_f1']:8.2%}")
    e = s["ensemble"]
    print(f"{'ENSEMBLE':<{width}}  {1:6.3f}  {e['accuracy']:8.2%}  {e['balanced_accuracy']:7.2%}  "
          f"{e['macro_f1']:8.2%}")
    print(f"ensemble vs best member ({s['best_member']['name']}) on {args.split}: "
          f"{s['gain_over_best_member'] * 100:+.2f} points")
    if args.out:
        print(f"report: {s['report']}")
    if args.export:
        card = export_ensemble(args.members, args.export, weights=args.weights,
                               name=args.name or (Path(args.export).stem if args.export.endswith(".onnx") else None),
                               data=args.data, val_split="PublicTest", labels=args.labels)
        print(f"exported {card['name']}: {card['onnx_file']} ({card['onnx_bytes'] / 1e6:.2f} MB, "
              f"{card['params'] / 1e6:.2f} M params), temperature {card['temperature']}")
    return 0
