"""Training runs side by side (``ferlab compare``): read each run directory, build one table, format it.

One row per training run: model, parameters, the config keys that differ between the runs, epochs, the
epoch whose weights the run kept (``model.safetensors``: the best validation accuracy or the lowest validation
loss, as the run's ``select_metric`` says) with that epoch's validation accuracy and loss, test metrics of every
evaluation found in the run directory (``RUN/eval*/metrics.json``, as ``ferlab evaluate RUN`` writes them, or
``RUN/metrics_*.json``), training time and images/s (from ``summary.json``, or from ``metrics.csv`` while a run
is still going).  Needs no torch.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from ..errors import FerlabError
from ..training.rundir import RunDir

COMMON = ("model", "params")
TRAIN_COLS = ("epochs run", "kept epoch", "selected by", "val acc", "val loss")
TAIL = ("train min", "images/s")


# ----------------------------------------------------------------------------------------------- reading

def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FerlabError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None


def _evals(run: Path) -> dict[str, dict]:
    """label ("PrivateTest/flip") -> metrics of each evaluation stored in the run directory."""
    out: dict[str, dict] = {}
    files = sorted(run.glob("eval*/metrics.json")) + sorted(run.glob("metrics_*.json"))
    for f in files:
        try:
            d = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(d, dict) or "accuracy" not in d:
            continue
        meta = d.get("meta") or {}
        if meta.get("split"):
            label = f"{meta['split']}/{meta.get('tta', 'none')}" + ("/clean" if meta.get("clean_only") else "")
        else:
            label = f.parent.name if f.name == "metrics.json" else f.stem.removeprefix("metrics_")
            label = label.removeprefix("eval-")
        out[label] = d
    return out


def read_run(path: str | Path) -> dict[str, Any]:
    """One run directory -> its record: name, flattened config, evaluations found, and the training numbers
    (from ``summary.json``, or from ``metrics.csv`` while the run is still going)."""
    run = Path(path)
    if not run.is_dir():
        raise FerlabError(f"{run}: no such run directory")
    cfg_file, summary_file = run / RunDir.CONFIG, run / RunDir.SUMMARY
    if not cfg_file.is_file() and not summary_file.is_file():
        raise FerlabError(f"{run}: not a run directory (no config.yaml or summary.json)")
    cfg = RunDir(run).read_config_dict(strict=True)
    summary = _read_json(summary_file) if summary_file.is_file() else {}
    rows = RunDir(run).read_metrics()
    rec: dict[str, Any] = {"run": run.name or str(run), "path": str(run), "config": _flatten(cfg),
                           "evals": _evals(run), "finished": bool(summary)}
    rec["model"] = summary.get("model", cfg.get("model"))
    rec["params"] = summary.get("params")
    if summary:
        epoch, by, acc, loss = selected_checkpoint(summary, rows)
        rec.update({"epochs run": summary.get("epochs_run"), "kept epoch": epoch, "selected by": by,
                    "val acc": acc, "val loss": loss,
                    "train min": summary.get("train_time_s", 0) / 60, "images/s": summary.get("images_per_s_median")})
    elif rows:  # still training: the epoch the run would keep by its select_metric, from metrics.csv so far
        by_loss = cfg.get("select_metric") == "val_loss"
        best = (min(rows, key=lambda r: r.get("val_loss", math.inf)) if by_loss
                else max(rows, key=lambda r: r.get("val_acc", -1)))
        ips = sorted(r.get("images_per_s", 0.0) for r in rows)
        rec.update({"epochs run": len(rows), "kept epoch": int(best.get("epoch", 0)),
                    "selected by": "val loss" if by_loss else "val acc", "val acc": best.get("val_acc"),
                    "val loss": best.get("val_loss"),
                    "train min": rows[-1].get("elapsed_s", 0) / 60, "images/s": ips[len(ips) // 2]})
    return rec


def selected_checkpoint(summary: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[Any, str, Any, Any]:
    """(epoch, "val acc" | "val loss" | "last", its validation accuracy, its validation loss) of the weights a
    finished run kept.  Summaries written before ``selected_epoch`` existed are read through ``selected`` and
    ``metrics.csv``."""
    sel = summary.get("selected", "best_acc")
    by = {"best_acc": "val acc", "best_loss": "val loss"}.get(sel, sel)
    epoch = summary.get("selected_epoch")
    if epoch is None:
        epoch = {"best_acc": summary.get("best_epoch_acc"), "best_loss": summary.get("best_epoch_loss"),
                 "last": summary.get("epochs_run")}.get(sel)
    row = next((r for r in rows if epoch is not None and int(r.get("epoch", -1)) == int(epoch)), {})
    acc = summary.get("selected_val_acc", row.get("val_acc"))
    loss = summary.get("selected_val_loss", row.get("val_loss"))
    if acc is None and sel == "best_acc":
        acc = summary.get("best_val_acc")
    if loss is None and sel == "best_loss":
        loss = summary.get("best_val_loss")
    return epoch, by, acc, loss


# ----------------------------------------------------------------------------------------------- table

def _differing_keys(configs: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for c in configs:
        keys += [k for k in c if k not in keys]
    diff = []
    for k in keys:
        vals = [json.dumps(c[k], sort_keys=True, default=str) if k in c else "<missing>" for c in configs]
        if len(set(vals)) > 1:
            diff.append(k)
    return diff


def build_table(runs: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(column names, one dict per run) with raw values."""
    diff = [k for k in _differing_keys([r["config"] for r in runs]) if k != "model"]
    labels: list[str] = []
    for r in runs:
        labels += [lb for lb in r["evals"] if lb not in labels]
    eval_cols = []
    for lb in labels:
        eval_cols += [f"{lb} acc", f"{lb} clean acc", f"{lb} bal acc", f"{lb} macro F1"]
    cols = ["run", *COMMON, *diff, *TRAIN_COLS, *eval_cols, *TAIL]
    table = []
    for r in runs:
        row: dict[str, Any] = {"run": r["run"] + ("" if r["finished"] else " (running)")}
        row.update({k: r.get(k) for k in (*COMMON, *TRAIN_COLS, *TAIL)})
        row.update({k: r["config"].get(k) for k in diff})
        for lb in labels:
            e = r["evals"].get(lb, {})
            row[f"{lb} acc"] = e.get("accuracy")
            row[f"{lb} clean acc"] = e.get("clean_accuracy")
            row[f"{lb} bal acc"] = e.get("balanced_accuracy")
            row[f"{lb} macro F1"] = e.get("macro_f1")
        table.append(row)
    # drop evaluation columns nobody has (e.g. clean accuracy on a dataset without Training)
    cols = [c for c in cols if not c.startswith(tuple(labels)) or any(t.get(c) is not None for t in table)]
    return cols, table


def _text(col: str, v: Any) -> str:
    if v is None:
        return "-"
    if col == "params":
        return f"{v / 1e6:.2f}M"
    if isinstance(v, float):
        if col.endswith(("acc", "F1")):
            return f"{100 * v:.2f}%"
        if col == "images/s":
            return f"{v:.0f}"
        if col == "train min":
            return f"{v:.1f}"
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def format_text(cols: list[str], table: list[dict[str, Any]]) -> str:
    cells = [[_text(c, row.get(c)) for c in cols] for row in table]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    left = {"run", "model"}

    def line(vals):
        return "  ".join(v.ljust(w) if c in left else v.rjust(w) for c, v, w in zip(cols, vals, widths)).rstrip()

    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def format_markdown(cols: list[str], table: list[dict[str, Any]]) -> str:
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(esc(c) for c in cols) + " |",
           "|" + "|".join(" --- " if c in ("run", "model") else " ---: " for c in cols) + "|"]
    out += ["| " + " | ".join(esc(_text(c, row.get(c))) for c in cols) + " |" for row in table]
    return "\n".join(out) + "\n"


def format_csv(cols: list[str], table: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for row in table:
        vals = []
        for c in cols:
            v = row.get(c)
            vals.append("" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else v)
        w.writerow(vals)
    return buf.getvalue()


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder with a run's ``config.yaml`` or ``summary.json``."""
    p = Path(path)
    return p.is_dir() and ((p / RunDir.CONFIG).is_file() or (p / RunDir.SUMMARY).is_file())


def collect_runs(paths: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """(records of the paths that are run directories, a note for each path skipped).  ``ferlab compare runs/*``
    also matches files and folders that are not runs: they are skipped, not fatal; none at all is an error."""
    runs, skipped = [], []
    for p in paths:
        if not Path(p).exists():
            skipped.append(f"{p}: no such run directory")
        elif not is_run_dir(p):
            skipped.append(f"{p}: not a run directory (no config.yaml or summary.json)")
        else:
            runs.append(read_run(p))
    if not runs:
        raise FerlabError(skipped[0] if len(skipped) == 1 else
                          f"none of the {len(paths)} paths is a run directory ({skipped[0]}, ...)")
    return runs, skipped


def sort_table(cols: list[str], table: list[dict[str, Any]], by: str) -> None:
    """Sort ``table`` in place by column ``by``, descending (numbers first, then the rest)."""
    if by not in cols:
        raise FerlabError(f"cannot sort by {by!r}; columns: {', '.join(cols)}")
    table.sort(key=lambda r: (r.get(by) is None, -(r.get(by) or 0) if isinstance(r.get(by), (int, float)) else 0))
