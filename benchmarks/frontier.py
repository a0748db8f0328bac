"""Accuracy against speed for every candidate of one ``bench_inference.py`` run: a plot and a table.

Reads the JSON that ``bench_inference.py --model A --model B ...`` wrote (every model and the ``fer``
package measured in the same run, on the same CPU) and draws FER2013 PrivateTest accuracy (single pass, tight
crops) against faces/s at batch 32, with the MACs per face of each candidate.

    python benchmarks/frontier.py benchmarks/results/inference.json   # writes frontier.png and frontier.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ferlab.io import atomic_write  # noqa: E402

FER_SPEED_KEY = "tflite_default (one face per invoke, as FER does)"
FER_ACC_KEY = "tight_crops_accuracy (48x48 image resized to 64 and given to its classifier)"


# FER+ models predict another label scheme (bench_inference scores them on FER+ labels): another task
NOT_COMPARABLE = {"ferplus"}


def points(res: dict) -> list[dict]:
    acc = {a.get("source", a["model"]): a.get("tight_crops_accuracy") for a in res["accuracy_privatetest"]
           if a.get("labels", "fer2013") == "fer2013"}
    out = []
    for c in res["classifier"]:
        src = c.get("source", c["model"])
        if src in NOT_COMPARABLE or src not in acc:
            continue
        out.append({"candidate": src, "macs_m": round(c["macs"] / 1e6) if c.get("macs") else None,
                    "faces_per_s": c["faces_per_s"]["batch_32"], "accuracy": acc.get(src)})
    fer = res.get("fer_package", {})
    if fer.get("status") == "ok":
        out.append({"candidate": "fer package (TFLite)", "macs_m": None,
                    "faces_per_s": fer["classifier_faces_per_s"][FER_SPEED_KEY],
                    "accuracy": fer["accuracy"][FER_ACC_KEY]})
    return out


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "benchmarks" / "results" / "inference.json")
    res = json.loads(src.read_text())
    pts = points(res)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for p in pts:
        peer = p["candidate"].startswith("fer package")
        ax.scatter(p["faces_per_s"], 100 * p["accuracy"], s=60, marker="s" if peer else "o",
                   color="tab:red" if peer else "tab:blue")
        label = Path(p["candidate"]).stem + (f"\n{p['macs_m']} M MACs" if p["macs_m"] else "")
        ax.annotate(label, (p["faces_per_s"], 100 * p["accuracy"]), textcoords="offset points", xytext=(6, 4),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"faces/s, batch 32, ONNX Runtime, {res['machine'].get('threads', 0)} threads (log scale)")
    ax.set_ylabel("FER2013 PrivateTest accuracy, single pass (%)")
    cpu = res["machine"].get("cpu", "")
    feats = ", ".join(f for f, on in res["machine"].get("features", {}).items() if on)
    ax.set_title(f"Accuracy against speed, one run\n{cpu} ({feats})", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = src.with_name("frontier.png")
    atomic_write(png, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    lines = ["| candidate | M MACs / face | faces/s (batch 32) | PrivateTest accuracy |", "| --- | ---: | ---: | ---: |"]
    for p in sorted(pts, key=lambda p: -p["faces_per_s"]):
        lines.append(f"| {p['candidate']} | {p['macs_m'] or ''} | {p['faces_per_s']:,.0f} | {100 * p['accuracy']:.2f}% |")
    md = src.with_name("frontier.md")
    atomic_write(md, lambda tmp: Path(tmp).write_text(f"From `{res['command']}` ({res['date']}, {cpu}, {feats}).\n\n"
                                                      + "\n".join(lines) + "\n"))
    print("\n".join(lines))
    print("wrote", png, md)


if __name__ == "__main__":
    main()
