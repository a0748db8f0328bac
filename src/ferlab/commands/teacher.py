"""ferlab teacher RUN [RUN...] --out teacher.npz: cache teacher logits for knowledge distillation."""

from __future__ import annotations

from ._options import add_progress, check_output, progress_of


def add_parser(sub) -> None:
    p = sub.add_parser("teacher", help="cache the soft-voting logits of teacher runs on the training split "
                                       "(knowledge distillation: train ... teacher=FILE kd_alpha=0.7)",
                       description="Example: ferlab teacher runs/fernet runs/fernet_seed2 --out teachers/fer.npz")
    p.add_argument("runs", nargs="+", help="teacher run directories (ferlab train --out)")
    p.add_argument("--out", required=True, help="output .npz (small: commit it beside the student's recipe)")
    p.add_argument("--data", default="../shared/datasets/fer2013/fer2013.csv.gz", help="dataset (FER2013 CSV)")
    p.add_argument("--split", default="Training", help="the student's training split (never PrivateTest)")
    p.add_argument("--labels", default="fer2013", help="label mode, as in the recipe")
    p.add_argument("--tta", choices=["none", "flip", "tencrop"], default="flip",
                   help="views the teachers average (default flip)")
    add_progress(p, default=True)
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from ..training.distill import save_teacher, teacher_logits

    check_output(args.out, "--out")  # before the teachers run over the whole training split
    arrays = teacher_logits(args.runs, args.data, split=args.split, labels=args.labels, tta=args.tta,
                            progress=progress_of(args))
    save_teacher(args.out, arrays)
    meta = json.loads(str(arrays["meta"]))
    print(f"wrote {args.out}: {len(arrays['ids'])} {args.split} samples, {len(args.runs)} teacher(s), "
          f"teacher accuracy on them {meta['train_accuracy']:.2%}")
    return 0
