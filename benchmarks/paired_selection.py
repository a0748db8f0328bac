"""Is a candidate as accurate as a bundled model on the selection split?  Paired, on the same faces.

Both models classify every face of ``--split`` (PublicTest by default: the split that selects); the script
prints and writes each one's accuracy, the difference in points with a paired bootstrap 95% interval (the
same resampled faces for both), and the faces only one of the two gets right.  "Within noise" means the
interval holds 0.  This is how a candidate was weighed against `fast` in issue 24:

    python benchmarks/paired_selection.py runs/candidates/micro3.onnx --against fast \
        --out benchmarks/results/micro/selection.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ferlab.data.fer2013 import load_fer2013_csv  # noqa: E402
from ferlab.inference.classifier import OnnxClassifier  # noqa: E402
from ferlab.io import atomic_write  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "fer2013" / "fer2013.csv.gz"


def paired(right_a: np.ndarray, right_b: np.ndarray, boot: int, rng: np.random.Generator | None = None) -> dict:
    """Accuracy of a and b (boolean arrays: face right or not), and a - b with a paired bootstrap interval
    (``rng``: default seed 0)."""
    n = len(right_a)
    idx = (rng or np.random.default_rng(0)).integers(0, n, size=(boot, n))
    diffs = (right_a[idx].mean(1) - right_b[idx].mean(1)) * 100
    lo, hi = (round(float(v), 2) for v in np.percentile(diffs, [2.5, 97.5]))
    return {"faces": n, "accuracy_a": round(float(right_a.mean()), 4), "accuracy_b": round(float(right_b.mean()), 4),
            "difference_points": round(float(right_a.mean() - right_b.mean()) * 100, 2), "ci95_points": [lo, hi],
            "within_noise": bool(lo <= 0 <= hi), "only_a_right": int((right_a & ~right_b).sum()),
            "only_b_right": int((right_b & ~right_a).sum()), "bootstrap": boot}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidate", help="model name or .onnx path")
    ap.add_argument("--against", default="fast", help="the model it would replace")
    ap.add_argument("--split", default="PublicTest")
    ap.add_argument("--bootstrap", type=int, default=5000)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--fp32-run", metavar="RUN_DIR",
                    help="also the candidate's top-1 agreement with the fp32 network of this run (what "
                         "tests/test_quant_agreement.py asks of a bundled int8 model: >= 97%%)")
    ap.add_argument("--out", help="write the result as JSON")
    a = ap.parse_args()
    ds = load_fer2013_csv(a.data).by_split(a.split)
    pred = {m: OnnxClassifier(m).predict_proba(ds.images).argmax(1) for m in (a.candidate, a.against)}
    res = {"command": "python benchmarks/paired_selection.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M"), "split": a.split, "a": a.candidate, "b": a.against,
           **paired(pred[a.candidate] == ds.labels, pred[a.against] == ds.labels, a.bootstrap)}
    if a.fp32_run:
        from ferlab.training.build import load_run
        from ferlab.training.forward import predict_logits

        model, _, cfg = load_run(a.fp32_run)
        fp32 = predict_logits(model, ds.images, cfg.input_size, amp="none").argmax(1)
        res["a_agreement_with_fp32"] = round(float((pred[a.candidate] == fp32).mean()), 5)
    print(json.dumps(res, indent=1))
    if a.out:
        atomic_write(a.out, lambda tmp: Path(tmp).write_text(json.dumps(res, indent=1) + "\n"))


if __name__ == "__main__":
    main()
