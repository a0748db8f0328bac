"""Accuracy against speed for every candidate of one ``bench_inference.py`` run: a plot and a table.

Reads the JSONs that ``bench_inference.py --model A --model B ...`` wrote (every model and the ``fer``
package measured in the same run, on the same CPU; one run per thread count, all on one CPU) and draws, a
panel per run, FER2013 PrivateTest accuracy (single pass, tight
crops) against faces/s at batch 32, with the MACs per face of each candidate.

    python benchmarks/frontier.py benchmarks/results/inference.json   # writes frontier.png and frontier.md
    python benchmarks/frontier.py results/inference_t1.json results/inference_t2.json   # a panel per run
    python benchmarks/frontier.py results/inference_{t1,t2,avx2_t1,avx2_t2}.json   # + runs under masked_cpu.py
    python benchmarks/frontier.py RUNS... --scored runs/candidates/x.onnx=results/x/PrivateTest-none/metrics.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ferlab.io import atomic_write  # noqa: E402

FER_SPEED_KEY = "tflite_default (one face per invoke, as FER does)"
FER_ACC_KEY = "tight_crops_accuracy (48x48 image resized to 64 and given to its classifier)"


# FER+ models predict another label scheme (bench_inference scores them on FER+ labels): another task
NOT_COMPARABLE = {"ferplus"}


def points(res: dict, later: dict[str, float] | None = None) -> list[dict]:
    """Each candidate's speed and PrivateTest accuracy; ``later``: accuracies of candidates the run timed
    unscored that were scored afterwards (once, by a selection rule: ``--scored``)."""
    acc = {a.get("source", a["model"]): a.get("tight_crops_accuracy") for a in res["accuracy_privatetest"]
           if a.get("labels", "fer2013") == "fer2013"}
    out = []
    unscored = set(res.get("unscored", []))  # timed, kept off PrivateTest: in the table, not on the plot
    for c in res["classifier"]:
        src = c.get("source", c["model"])
        if src in NOT_COMPARABLE or (src not in acc and src not in unscored):
            continue
        score = acc.get(src, (later or {}).get(src))
        out.append({"candidate": src, "macs_m": round(c["macs"] / 1e6) if c.get("macs") else None,
                    "faces_per_s": c["faces_per_s"]["batch_32"], "accuracy": score,
                    "scored_later": src not in acc and score is not None})
    fer = res.get("fer_package", {})
    if fer.get("status") == "ok":
        out.append({"candidate": "fer package (TFLite)", "macs_m": None,
                    "faces_per_s": fer["classifier_faces_per_s"][FER_SPEED_KEY],
                    "accuracy": fer["accuracy"][FER_ACC_KEY], "scored_later": False})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", help="bench_inference JSONs (default: results/inference.json)")
    ap.add_argument("--scored", action="append", default=[], metavar="CANDIDATE=METRICS_JSON",
                    help="the PrivateTest accuracy of a candidate the runs timed unscored, from the metrics.json of "
                         "its one `ferlab evaluate` (drawn hollow)")
    a = ap.parse_args()
    srcs = [Path(r) for r in a.runs] or [ROOT / "benchmarks" / "results" / "inference.json"]
    runs = [json.loads(src.read_text()) for src in srcs]
    later = {}
    for item in a.scored:
        name, _, path = item.partition("=")
        later[name] = json.loads(Path(path).read_text())["accuracy"]
    # one CPU; runs with its AVX-512 and VNNI hidden (benchmarks/masked_cpu.py) are panels of their own
    native = [r for r in runs if not r["machine"].get("cpu_mask")] or runs
    cpus = {(r["machine"].get("cpu", ""), features(r)) for r in native} | {(r["machine"].get("cpu", ""), None)
                                                                          for r in runs if r not in native}
    if len({c for c, _ in cpus}) > 1 or len({f for _, f in cpus if f is not None}) > 1:
        raise SystemExit(f"the runs were measured on different CPUs ({cpus}): one frontier per CPU")
    cpu, feats = next(c for c in cpus if c[1] is not None)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one panel per run (e.g. 1 and 2 threads), same accuracy axis: speed only is what the threads change;
    # two panels a row
    cols = min(2, len(runs))
    rows = -(-len(runs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 4.8 * rows), sharey=True, squeeze=False)
    for ax in axes.flat[len(runs):]:
        ax.set_visible(False)
    for ax, res in zip(axes.flat, runs):
        placed: list[tuple[float, float]] = []
        pts = points(res, later)
        for p in sorted((p for p in pts if p["accuracy"] is not None), key=lambda p: p["faces_per_s"]):
            peer = p["candidate"].startswith("fer package")
            x, y = p["faces_per_s"], 100 * p["accuracy"]
            color = "tab:red" if peer else "tab:blue"
            ax.scatter(x, y, s=60, marker="s" if peer else "o", facecolors="none" if p["scored_later"] else color,
                       edgecolors=color)
            label = Path(p["candidate"]).stem + (f"\n{p['macs_m']} M MACs" if p["macs_m"] else "")
            # a label that would overlap its left neighbour's goes below the point instead
            near = any(abs(np.log10(x / px)) < 0.12 and abs(y - py) < 0.6 for px, py in placed)
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(14, -30) if near else (6, 4), fontsize=8)
            placed.append((x, y))
        ax.set_xscale("log")
        fer = next((p["faces_per_s"] for p in pts if p["candidate"].startswith("fer package")), None)
        lo, hi = ax.get_xlim()
        if fer:  # issue 24's bar for `fast`: three times `fer`'s model
            ax.axvline(3 * fer, color="tab:red", ls=":", lw=1)
            ax.annotate("3x fer", (3 * fer, ax.get_ylim()[0]), textcoords="offset points", xytext=(3, 3),
                        fontsize=8, color="tab:red")
            hi = max(hi, 3.3 * fer)
        ax.set_xlim(lo, hi * 1.35)  # room for the fastest point's label, which is written to its right
        ax.set_xlabel(f"faces/s, batch 32, {column(res)} (log scale)")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("FER2013 PrivateTest accuracy, single pass (%)")
    fig.suptitle(f"Accuracy against speed, each panel one run\n{cpu} ({feats})", fontsize=9)
    fig.tight_layout()
    png = srcs[0].with_name("frontier.png")
    atomic_write(png, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    md = srcs[0].with_name("frontier.md")
    text = table(runs, cpu, feats, later)
    atomic_write(md, lambda tmp: Path(tmp).write_text(text))
    print(text)
    print("wrote", png, md)


def features(res: dict) -> str:
    return ", ".join(f for f, on in res["machine"].get("features", {}).items() if on)


def column(res: dict) -> str:
    """What a run measured: its threads, and the kernels where a CPU mask chose them."""
    t = f"{res['machine'].get('threads', 0)} thread(s)"
    return t + (", AVX2 kernels (AVX-512, VNNI hidden)" if res["machine"].get("cpu_mask") else "")


def table(runs: list[dict], cpu: str, feats: str, later: dict[str, float] | None = None) -> str:
    """One row per candidate: MACs, faces/s and the ratio to `fer`'s model in each run, accuracy."""
    rows: dict[str, dict] = {}
    for k, res in enumerate(runs):
        pts = points(res, later)
        fer = next((p["faces_per_s"] for p in pts if p["candidate"].startswith("fer package")), None)
        for p in pts:
            row = rows.setdefault(p["candidate"], {"macs_m": p["macs_m"], "accuracy": p["accuracy"],
                                                   "later": p["scored_later"], "speed": {}})
            row["speed"][k] = (p["faces_per_s"], p["faces_per_s"] / fer if fer else None)
    head = "| candidate | M MACs / face | " + " | ".join(f"faces/s, {column(r)} (x fer)" for r in runs) \
        + " | PrivateTest accuracy |"
    lines = [head, "| --- | ---: | " + "---: | " * len(runs) + "---: |"]
    for name, row in sorted(rows.items(), key=lambda kv: -kv[1]["speed"].get(0, (0, 0))[0]):
        cells = []
        for k in range(len(runs)):
            fps, ratio = row["speed"].get(k, (None, None))
            cells.append("" if fps is None else f"{fps:,.0f}" + (f" ({ratio:.2f}x)" if ratio else ""))
        acc = "not scored" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}%" + (
            " (scored after the run, hollow)" if row["later"] else "")
        lines.append(f"| {name} | {row['macs_m'] or ''} | " + " | ".join(cells) + f" | {acc} |")
    commands = "\n".join(f"- `{r['command']}` ({r['date']}, load average {r['machine'].get('load_average')})"
                          for r in runs)
    return f"{cpu} ({feats}); one row per candidate, each column one run:\n\n{commands}\n\n" + "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
