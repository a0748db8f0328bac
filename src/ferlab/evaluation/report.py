"""Evaluation report: PNG plots and one self-contained HTML page (plots embedded as data URIs).

``write_report(out_dir, result, images, y_true, probs, classes, title, meta)`` writes

  metrics.json          every number of the ``EvalResult`` plus ``meta`` (model, data, split, TTA, command)
  confusion.png         confusion matrix, counts and row-normalised
  roc.png               one-vs-rest ROC curves with AUC
  pr.png                one-vs-rest precision-recall curves with average precision and each class's count
  selective.png         accuracy against coverage (keep the most confident predictions), with the
                        confidence thresholds that reach 90% and 95% accuracy
  reliability.png       reliability diagram (accuracy vs confidence) with the confidence histogram
  per_class.png         precision / recall / F1 per class, recall and F1 with their 95% bootstrap intervals
  samples.png           sample predictions and the most confident mistakes, "true / predicted (conf)"
  report.html           all of the above on one page that needs no other file

Every file is written to a temporary file and renamed, so a crash leaves no half-written report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write
from .metrics import EvalResult

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
           "#64B5CD"]
GOOD, BAD = "#1a7f37", "#cf222e"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.titleweight": "bold",
                         "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 100})
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", facecolor="white")
    _plt().close(fig)
    return buf.getvalue()


def write_file(path: Path, data: bytes) -> None:
    """Atomic write, readable by others like any file the user writes (mkstemp makes 0600 files)."""
    def write(tmp: str) -> None:
        Path(tmp).write_bytes(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)

    atomic_write(path, write)


def _fmt(x: float | None, pct: bool = True, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    return f"{100 * x:.{nd}f}%" if pct else f"{x:.3f}"


# ----------------------------------------------------------------------------------------------- plots

def plot_confusion(result: EvalResult) -> bytes:
    plt = _plt()
    cm, cmn, names = result.confusion, result.confusion_normalized, result.classes
    k = len(names)
    side = max(3.6, 0.55 * k + 1.6)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 0.8, side))
    for ax, mat, title, fmt in ((axes[0], cm, "Counts", "d"), (axes[1], cmn, "Normalised by true class (recall)",
                                                                ".2f")):
        shade = cmn  # both panels shaded by the row share, so rare classes are as visible as common ones
        im = ax.imshow(shade, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(k), names, rotation=40, ha="right")
        ax.set_yticks(range(k), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        ax.spines[:].set_visible(False)
        ax.set_xticks(np.arange(k + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(k + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", linewidth=1.5)
        ax.tick_params(which="minor", length=0)
        for i in range(k):
            for j in range(k):
                v = mat[i, j]
                text = format(int(v), fmt) if fmt == "d" else (f"{v:.2f}" if v >= 0.005 else "0")
                ax.text(j, i, text, ha="center", va="center", fontsize=8 if k <= 8 else 6,
                        color="white" if shade[i, j] > 0.55 else "#222222")
    fig.colorbar(im, ax=axes, fraction=0.025, pad=0.02, label="share of the true class")
    return _png(fig)


def plot_roc(result: EvalResult) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    ax.plot([0, 1], [0, 1], ls="--", color="#999999", lw=1)
    for i, c in enumerate(result.classes):
        fpr, tpr = result.roc[c]
        if np.isnan(fpr).any():
            ax.plot([], [], color=PALETTE[i % len(PALETTE)], label=f"{c} (AUC n/a)")
            continue
        ax.plot(fpr, tpr, color=PALETTE[i % len(PALETTE)], lw=1.5, label=f"{c} (AUC {result.auc[i]:.3f})")
    fpr, tpr = result.roc["micro"]
    ax.plot(fpr, tpr, color="black", lw=2, ls=":", label=f"micro-average (AUC {result.auc_micro:.3f})")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"One-vs-rest ROC (macro AUC {result.auc_macro:.3f})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return _png(fig)


def plot_reliability(result: EvalResult) -> bytes:
    plt = _plt()
    rel = result.reliability
    edges, conf, acc, count = rel["edges"], rel["confidence"], rel["accuracy"], rel["count"]
    centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(5.2, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    m = count > 0
    ax.bar(centers[m], acc[m], width=width[m] * 0.95, color=PALETTE[0], alpha=0.85, label="accuracy",
           edgecolor="white")
    gap_lo, gap_hi = np.minimum(acc[m], conf[m]), np.maximum(acc[m], conf[m])
    ax.bar(centers[m], gap_hi - gap_lo, bottom=gap_lo, width=width[m] * 0.95, fill=False, hatch="////",
           edgecolor=BAD, linewidth=0.8, label="gap to confidence")
    ax.plot(conf[m], conf[m], "o", color="black", ms=3, label="mean confidence")
    ax.plot([0, 1], [0, 1], ls="--", color="#777777", lw=1, label="perfect calibration")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    t = result.meta.get("temperature")
    ax.set_title(f"Reliability (ECE {result.ece:.3f}" + (f", temperature {t:g}" if t else "") + ")")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    axh.bar(centers, count, width=width * 0.95, color="#8C8C8C")
    axh.set_xlim(0, 1)
    axh.set_xlabel("confidence of the top prediction")
    axh.set_ylabel("samples")
    fig.tight_layout()
    return _png(fig)


def plot_per_class(result: EvalResult) -> bytes:
    plt = _plt()
    k = len(result.classes)
    x = np.arange(k)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.95 * k + 1.5), 4.6))
    w = 0.26
    for j, (name, vals, key) in enumerate((("precision", result.precision, None), ("recall", result.recall, "recall"),
                                           ("F1", result.f1, "f1"))):
        v = np.nan_to_num(vals.astype(float), nan=0.0)
        ci = result.class_ci.get(key) if key else None
        bars = ax.bar(x + (j - 1) * w, v, width=w, color=PALETTE[j], label=name)
        top = v.copy()
        if ci is not None and np.isfinite(ci).any():
            ok = np.isfinite(ci).all(axis=1) & np.isfinite(vals.astype(float))
            lo, hi = np.clip(v - ci[:, 0], 0, None), np.clip(ci[:, 1] - v, 0, None)
            ax.errorbar((x + (j - 1) * w)[ok], v[ok], yerr=[lo[ok], hi[ok]], fmt="none", ecolor="#333333",
                        elinewidth=0.9, capsize=2)
            top = np.where(ok, np.fmax(v, ci[:, 1]), v)
        for b, val, t in zip(bars, vals, top):
            if np.isfinite(val):
                ax.text(b.get_x() + b.get_width() / 2, t + 0.01, f"{val:.2f}", ha="center",
                        va="bottom", fontsize=6.5, rotation=90)
    ax.axhline(result.accuracy, color="#444444", ls="--", lw=1, zorder=0, label=f"accuracy {result.accuracy:.3f}")
    ax.set_xticks(x, [f"{c}\n(n={s})" for c, s in zip(result.classes, result.support)])
    ax.set_ylim(0, 1.18)
    ax.set_ylabel("score")
    ax.set_title("Per-class precision, recall and F1" + (f" (whiskers: 95% CI, {result.bootstrap} bootstrap)"
                                                         if result.class_ci else ""))
    ax.legend(ncols=4, fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_pr(result: EvalResult) -> bytes:
    """One-vs-rest precision-recall curves of every class, with AP, count and share (the chance level)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.2, 4.9))
    n = max(result.n, 1)
    for i, c in enumerate(result.classes):
        color = PALETTE[i % len(PALETTE)]
        sup = int(result.support[i])
        rec, prec = result.pr.get(c, (np.array([np.nan]), None))
        if np.isnan(rec).any():
            ax.plot([], [], color=color, label=f"{c}: AP n/a (n={sup})")
            continue
        # the curve starts at recall 0 with the precision of the most confident point
        ax.step(np.r_[0.0, rec], np.r_[prec[0], prec], where="pre", color=color, lw=1.5,
                label=f"{c}: AP {result.ap[i]:.3f} (n={sup}, {100 * sup / n:.1f}%)")
        ax.plot([0, 1], [sup / n] * 2, color=color, lw=0.8, ls=(0, (1, 3)), alpha=0.8)
    if "micro" in result.pr and not np.isnan(result.pr["micro"][0]).any():
        rec, prec = result.pr["micro"]
        ax.step(np.r_[0.0, rec], np.r_[prec[0], prec], where="pre", color="black", lw=2, ls=":",
                label=f"micro-average: AP {result.ap_micro:.3f}")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.03)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"One-vs-rest precision-recall (mean AP {result.ap_macro:.3f})")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return _png(fig)


def plot_selective(result: EvalResult) -> bytes:
    """Accuracy of the kept predictions against the share kept, with the thresholds reaching the targets."""
    plt = _plt()
    sel = result.selective
    cov, acc, thr = sel["coverage"], sel["accuracy"], sel["threshold"]
    fig, ax = plt.subplots(figsize=(6.2, 4.6))
    ax.step(np.r_[0.0, cov], np.r_[acc[0], acc], where="pre", color=PALETTE[0], lw=2,
            label=f"accuracy of the kept predictions (area {sel['area']:.3f})")
    ax.axhline(result.accuracy, color="#777777", ls="--", lw=1, label=f"accuracy on all {result.n}: "
                                                                       f"{100 * result.accuracy:.1f}%")
    ax2 = ax.twinx()
    ax2.plot(cov, thr, color="#8C8C8C", lw=1, ls="-.", label="confidence threshold (right axis)")
    ax2.set_ylim(0, 1.02)
    ax2.set_ylabel("confidence threshold (top probability)", color="#666666")
    ax2.spines["right"].set_visible(True)
    lo = min(float(np.min(acc)), result.accuracy)
    for (target, hit), color in zip(sorted(sel["targets"].items()), (GOOD, PALETTE[4], PALETTE[3])):
        ax.axhline(target, color=color, lw=0.8, ls=":")
        if hit is None:
            ax.text(0.99, target, f"{100 * target:.0f}% not reached", color=color, ha="right", va="bottom",
                    fontsize=8)
            continue
        ax.plot([hit["coverage"]], [hit["accuracy"]], "o", color=color, ms=6, zorder=5)
        # right of the point and above the target line: the curve falls below it there
        ax.annotate(f"{100 * target:.0f}%: confidence ≥ {hit['threshold']:.2f} keeps {100 * hit['coverage']:.1f}% "
                    f"({hit['kept']})", (hit["coverage"], target), textcoords="offset points", xytext=(10, 3),
                    fontsize=8, color=color, va="bottom")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(max(0.0, lo - 0.05), 1.01)
    ax.set_xlabel("coverage (share of images kept, most confident first)")
    ax.set_ylabel("accuracy of the kept predictions")
    ax.set_title("Selective prediction: accuracy against coverage")
    ax.grid(alpha=0.3)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower left", fontsize=8, frameon=False)
    return _png(fig)


def pick_samples(y_true: np.ndarray, probs: np.ndarray, n_random: int = 16, n_mistakes: int = 16,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(random sample indices, most confident mistakes' indices, most confident first)."""
    pred, conf = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero(pred != y_true)
    mistakes = wrong[np.argsort(-conf[wrong], kind="stable")][:n_mistakes]
    rng = np.random.default_rng(seed)
    rest = np.setdiff1d(np.arange(len(y_true)), mistakes)
    random = np.sort(rng.choice(rest, size=min(n_random, len(rest)), replace=False))
    return random, mistakes


def plot_samples(images: np.ndarray, y_true: np.ndarray, probs: np.ndarray, classes: list[str], cols: int = 8,
                 n_random: int = 16, n_mistakes: int = 16, seed: int = 0) -> bytes:
    plt = _plt()
    random, mistakes = pick_samples(y_true, probs, n_random, n_mistakes, seed)
    sections = [(f"Random test images ({len(random)})", random),
                (f"Most confident mistakes ({len(mistakes)})", mistakes)]
    sections = [(t, idx) for t, idx in sections if len(idx)]
    rows = [int(np.ceil(len(idx) / cols)) for _, idx in sections]
    cell = 1.5
    fig = plt.figure(figsize=(cols * cell, sum(rows) * (cell + 0.1) + 0.4 * len(sections)))
    subfigs = fig.subfigures(len(sections), 1, height_ratios=[r + 0.35 for r in rows], squeeze=False)[:, 0]
    pred, conf = probs.argmax(1), probs.max(1)
    for sf, (title, idx), r in zip(subfigs, sections, rows):
        sf.suptitle(title, fontsize=10, fontweight="bold", x=0.01, ha="left")
        axes = sf.subplots(r, cols, squeeze=False)
        for a in axes.ravel():
            a.axis("off")
        for a, i in zip(axes.ravel(), idx):
            a.imshow(images[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ok = pred[i] == y_true[i]
            a.set_title(f"{classes[y_true[i]]} / {classes[pred[i]]} ({conf[i]:.2f})", fontsize=7.5,
                        color=GOOD if ok else BAD, pad=2)
        sf.subplots_adjust(left=0.005, right=0.995, top=0.86 if r == 1 else 0.9, bottom=0.01, wspace=0.1,
                           hspace=0.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, facecolor="white")
    plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- html

CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
 background:#f6f8fa;color:#1f2328;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:1.6em;margin:0 0 4px} h2{font-size:1.15em;margin:32px 0 10px;border-bottom:1px solid #d0d7de;
 padding-bottom:4px} .sub{color:#59636e;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(165px,1fr));gap:10px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:10px 14px}
.card .v{font-size:1.55em;font-weight:600} .card .l{color:#59636e;font-size:.85em} .card .c{color:#59636e;
 font-size:.8em} .card.main{border-color:#4C72B0;box-shadow:0 0 0 1px #4C72B0 inset}
table{border-collapse:collapse;background:#fff;border:1px solid #d0d7de;font-size:.9em}
th,td{padding:5px 10px;border-bottom:1px solid #eaeef2;text-align:right} th{background:#f6f8fa}
td:first-child,th:first-child{text-align:left} .meta td{text-align:left;font-family:ui-monospace,monospace;
 font-size:.92em;word-break:break-all} .meta td:first-child{font-family:inherit;color:#59636e;white-space:nowrap}
.ci{color:#59636e;font-size:.85em}
.bar{display:inline-block;height:8px;background:#4C72B0;border-radius:2px;vertical-align:middle;margin-left:6px}
figure{margin:0;background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:10px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:#59636e;font-size:.85em;margin-top:6px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:14px;align-items:start} @media(max-width:900px){.grid2{grid-template-columns:1fr}}
.notes{background:#fff8c5;border:1px solid #d4a72c;border-radius:8px;padding:8px 14px}
footer{color:#59636e;font-size:.8em;margin-top:36px}
"""


def _card(label: str, value: str, extra: str = "", main: bool = False) -> str:
    return (f'<div class="card{" main" if main else ""}"><div class="l">{html.escape(label)}</div>'
            f'<div class="v">{html.escape(value)}</div><div class="c">{html.escape(extra)}</div></div>')


def _img(data: bytes, alt: str, caption: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{b64}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _ci_txt(ci: np.ndarray | None, i: int) -> str:
    """' (lo-hi)' in percent for class i of a (C, 2) interval array, '' when there is none."""
    if ci is None or not np.isfinite(ci[i]).all():
        return ""
    return f'<span class="ci"> {100 * ci[i, 0]:.0f}-{100 * ci[i, 1]:.0f}</span>'


def _class_table(result: EvalResult) -> str:
    norm = result.confusion_normalized
    rec_ci, f1_ci = result.class_ci.get("recall"), result.class_ci.get("f1")
    ap = result.ap if result.ap is not None else np.full(len(result.classes), np.nan)
    rows = []
    for i, c in enumerate(result.classes):
        off = norm[i].copy()
        off[i] = -1
        j = int(np.argmax(off))
        confused = f"{result.classes[j]} ({100 * off[j]:.0f}%)" if result.support[i] and off[j] > 0 else "-"
        rec = result.recall[i]
        bar = f'<span class="bar" style="width:{60 * rec:.0f}px"></span>' if np.isfinite(rec) else ""
        rows.append(
            f"<tr><td>{html.escape(c)}</td><td>{int(result.support[i])}</td><td>{_fmt(result.precision[i])}</td>"
            f"<td>{_fmt(rec)}{_ci_txt(rec_ci, i)}{bar}</td><td>{_fmt(result.f1[i])}{_ci_txt(f1_ci, i)}</td>"
            f"<td>{_fmt(ap[i], pct=False)}</td><td>{_fmt(result.auc[i], pct=False)}</td>"
            f"<td>{html.escape(confused)}</td></tr>")
    for name, d in (("macro average", result.macro), ("weighted average", result.weighted)):
        macro = name.startswith("macro")
        rows.append(f"<tr><th>{name}</th><th>{result.n}</th><th>{_fmt(d['precision'])}</th>"
                    f"<th>{_fmt(d['recall'])}</th><th>{_fmt(d['f1'])}</th>"
                    f"<th>{_fmt(result.ap_macro, pct=False) if macro else ''}</th>"
                    f"<th>{_fmt(result.auc_macro, pct=False) if macro else ''}</th><th></th></tr>")
    ci_head = (" <span class='ci'>(95% CI)</span>" if result.class_ci else "")
    return ("<table><tr><th>class</th><th>support</th><th>precision</th>"
            f"<th>recall{ci_head}</th><th>F1{ci_head}</th><th>average precision</th>"
            "<th>AUC (one-vs-rest)</th><th>most confused with</th></tr>" + "".join(rows) + "</table>")


def _selective_table(result: EvalResult) -> str:
    sel = result.selective
    parts = []
    for target, hit in sorted(sel["targets"].items()):
        if hit is None:
            j = int(np.searchsorted(sel["kept"], sel["min_kept"]))
            parts.append(f"<li><b>{100 * target:.0f}% accuracy: not reached</b> at any confidence threshold "
                         f"that keeps at least {sel['min_kept']} images (the {int(sel['kept'][j])} most confident "
                         f"are {100 * sel['accuracy'][j]:.1f}% right).</li>")
        else:
            parts.append(
                f"<li><b>{100 * target:.0f}% accuracy</b>: keep predictions with confidence ≥ "
                f"<b>{hit['threshold']:.3f}</b>; that keeps {100 * hit['coverage']:.1f}% of the images "
                f"({hit['kept']} of {sel['n']}), {100 * hit['accuracy']:.1f}% right (95% lower bound "
                f"{100 * hit['accuracy_lower95']:.1f}%).</li>")
    rows = "".join(
        f"<tr><td>{100 * cv:.0f}%</td><td>{row['kept']}</td><td>{row['threshold']:.3f}</td>"
        f"<td>{_fmt(row['accuracy'])}</td></tr>"
        for cv, row in sel["at_coverage"].items())
    return (f"<div><ul>{''.join(parts)}</ul><p>Area under the curve {sel['area']:.3f} (mean accuracy over "
            "coverage; 1 = every kept prediction right). Thresholds chosen on this split are optimistic on others."
            "</p><table><tr><th>coverage</th><th>images kept</th><th>confidence ≥</th><th>accuracy</th></tr>"
            f"{rows}</table></div>")


def _calibration_table(result: EvalResult) -> str:
    rel = result.reliability
    edges, conf, acc, count = rel["edges"], rel["confidence"], rel["accuracy"], rel["count"]
    n = count.sum()
    mean_conf = float(np.nansum(conf * count) / n) if n else float("nan")
    gap = mean_conf - result.accuracy
    verdict = "over-confident" if gap > 0.01 else "under-confident" if gap < -0.01 else "well calibrated on average"
    t = result.meta.get("temperature")
    head = (f"<p>Mean confidence {_fmt(mean_conf)} against accuracy {_fmt(result.accuracy)}: "
            f"{verdict} ({100 * gap:+.1f} points). ECE {result.ece:.3f}, NLL {result.nll:.3f}"
            + (f", temperature {t:g}" if t else "") + ".</p>")
    rows = "".join(
        f"<tr><td>{edges[i]:.2f}-{edges[i + 1]:.2f}</td><td>{int(count[i])}</td><td>{_fmt(conf[i])}</td>"
        f"<td>{_fmt(acc[i])}</td><td>{100 * (acc[i] - conf[i]):+.1f}</td></tr>"
        for i in range(len(count)) if count[i] > 0)
    return (f"<div>{head}<table><tr><th>confidence bin</th><th>samples</th><th>mean confidence</th>"
            f"<th>accuracy</th><th>gap (points)</th></tr>{rows}</table></div>")


def _meta_table(meta: dict[str, Any]) -> str:
    rows = []
    for k, v in meta.items():
        if isinstance(v, (dict, list)):
            v = json.dumps(v)
        rows.append(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>")
    return '<table class="meta">' + "".join(rows) + "</table>"


def _cards(r: EvalResult) -> list[str]:
    """The headline numbers at the top of the page, one card each."""
    ci = r.accuracy_ci
    ci_txt = f"95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f}% ({r.bootstrap} bootstrap)" if ci else ""
    bal_ci, f1_ci = r.ci.get("balanced_accuracy"), r.ci.get("macro_f1")
    cards = [
        _card("accuracy", _fmt(r.accuracy, nd=2), ci_txt, main=True),
        _card("balanced accuracy", _fmt(r.balanced_accuracy),
              f"95% CI {100 * bal_ci[0]:.1f}-{100 * bal_ci[1]:.1f}%" if bal_ci else "mean per-class recall"),
        _card("macro F1", _fmt(r.macro["f1"]), f"95% CI {100 * f1_ci[0]:.1f}-{100 * f1_ci[1]:.1f}%" if f1_ci else ""),
    ]
    if r.clean_accuracy is not None:
        cards.append(_card("clean accuracy", _fmt(r.clean_accuracy), f"{r.clean_n} of {r.n} rows with no copy "
                                                                     "in Training"))
    cards += [
        _card("top-2 accuracy", _fmt(r.top_k.get(2))), _card("top-3 accuracy", _fmt(r.top_k.get(3))),
        _card("macro AUC", _fmt(r.auc_macro, pct=False), f"micro {_fmt(r.auc_micro, pct=False)}"),
        _card("mean average precision", _fmt(r.ap_macro, pct=False), f"micro {_fmt(r.ap_micro, pct=False)}"),
        _card("ECE", _fmt(r.ece, pct=False), f"{len(r.reliability['count'])} bins"),
        _card("NLL", _fmt(r.nll, pct=False), "mean -log p(true class)"),
        _card("samples", str(r.n), f"{len(r.classes)} classes"),
    ]
    for target, hit in sorted((r.selective or {}).get("targets", {}).items()):
        cards.append(_card(f"{100 * target:.0f}% accuracy at", f"conf ≥ {hit['threshold']:.2f}" if hit else
                           "not reached", f"keeps {100 * hit['coverage']:.1f}% of images" if hit else
                           "at any confidence threshold"))
    return cards


def render_html(result: EvalResult, title: str, plots: dict[str, bytes], meta: dict[str, Any]) -> str:
    r = result
    cards = _cards(r)
    conf_txt = ", ".join(f"{t} → {p} {n} ({100 * s:.0f}%)" for t, p, n, s in r.top_confusions(5))
    sub = " · ".join(str(meta[k]) for k in ("model", "split", "tta") if meta.get(k) is not None)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in r.notes)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{html.escape(title)}</h1><p class='sub'>{html.escape(sub)}</p>",
        f"<div class='cards'>{''.join(cards)}</div>",
        f"<div class='notes' style='margin-top:14px'><ul>{notes}</ul></div>" if notes else "",
        "<h2>Per class</h2>", _class_table(r),
        f"<p class='sub' style='margin-top:8px'>Largest confusions (true → predicted): {html.escape(conf_txt)}</p>"
        if conf_txt else "",
        "<h2>Confusion matrix</h2>",
        _img(plots["confusion"], "confusion matrix", "Rows are true classes, columns predictions; both panels are "
             "shaded by the share of the true class."),
        "<div class='grid2' style='margin-top:14px'>",
        _img(plots["per_class"], "per-class scores", "Precision, recall and F1 per class (n = support); dashed "
             "line: overall accuracy" + ("; whiskers: 95% bootstrap intervals of recall and F1, wide where a class "
                                        "has few images." if r.class_ci else ".")),
        _img(plots["roc"], "ROC curves", "One-vs-rest ROC curve of every class and the micro-average."),
        "</div>",
        *(("<h2>Precision-recall</h2>", _img(plots["pr"], "precision-recall curves",
           "One-vs-rest precision-recall curve of every class with its average precision, test count n and share; "
           "the dotted line of each colour is that share, the precision of guessing. Rare classes have ragged "
           "curves: few images decide them.")) if "pr" in plots else ()),
        *(("<h2>Selective prediction</h2><div class='grid2'>",
           _img(plots["selective"], "accuracy against coverage",
                "Keep only the predictions whose top probability reaches a threshold: accuracy of the kept ones "
                "(left axis) against the share kept; grey dash-dot: the threshold (right axis)."),
           _selective_table(r), "</div>") if "selective" in plots else ()),
        "<h2>Calibration</h2><div class='grid2'>",
        _img(plots["reliability"], "reliability diagram", "Accuracy per confidence bin against the mean confidence "
             "of the bin; a calibrated model follows the diagonal. Below: how many predictions fall in each bin."),
        _calibration_table(r), "</div>",
        "<h2>Sample predictions</h2>",
        _img(plots["samples"], "sample predictions", "Captions read true / predicted (confidence); green = correct, "
             "red = wrong."),
        "<h2>Run</h2>", _meta_table(meta),
        f"<footer>Written by ferlab on {time.strftime('%Y-%m-%d %H:%M')}. Every number is also in metrics.json "
        "beside this page.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p)


# ----------------------------------------------------------------------------------------------- main

def write_report(out_dir: str | os.PathLike, result: EvalResult, images: np.ndarray, y_true: np.ndarray,
                 probs: np.ndarray, classes: list[str] | tuple[str, ...], title: str = "Evaluation report",
                 meta: dict[str, Any] | None = None) -> Path:
    """Write metrics.json, the PNG plots and report.html into ``out_dir``; returns the report.html path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    result.meta = {**result.meta, **meta}
    classes = [str(c) for c in classes]
    y_true = np.asarray(y_true)
    probs = np.asarray(probs)
    plots = {
        "confusion": plot_confusion(result),
        "roc": plot_roc(result),
        "reliability": plot_reliability(result),
        "per_class": plot_per_class(result),
        **({"pr": plot_pr(result)} if result.pr else {}),
        **({"selective": plot_selective(result)} if result.selective else {}),
        "samples": plot_samples(np.asarray(images), y_true, probs, classes),
    }
    for name, data in plots.items():
        write_file(out / f"{name}.png", data)
    write_file(out / "metrics.json", json.dumps(result.to_dict(), indent=2).encode())
    path = out / "report.html"
    write_file(path, render_html(result, title, plots, result.meta).encode("utf-8"))
    return path
