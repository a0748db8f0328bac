"""Class imbalance on FER2013: what helps, what only seems to help, and what leaks.

One architecture (``--model``, default fernet_fast) and one budget (``--epochs``, default 8), the same recipe
and seed for every variant; each variant selects its checkpoint on PublicTest and is reported on PrivateTest
(accuracy, balanced accuracy, macro-F1, per-class recall, clean accuracy):

1. balancing AFTER the split (the honest protocol): none, class weights (balanced), random over-sampling (ROS),
   SMOTE, SMOTE + Tomek links, targeted augmentation (augmented copies of the named classes);
2. the leakage experiment: ROS and SMOTE BEFORE the split, as leaky papers did: Training and PrivateTest are
   pooled, balanced, then re-split at random 80/10/10 (train / val / test, stratified, row by row), so copies
   (ROS) or interpolations (SMOTE) of test images sit in training; against the same pool split 80/10/10 FIRST
   and balanced after.  Both protocols report accuracy on their own test part, and on the real PublicTest,
   which neither has touched;
3. a soft-voting ensemble of the balanced models (class weights, ROS, SMOTE, SMOTE+Tomek, targeted) against its
   best member (chosen on PublicTest), on PrivateTest;
4. the unbalanced CNN's penultimate-layer features + linear SVM / random forest / logistic regression (fit on
   Training, chosen on PublicTest) against the CNN alone, on PrivateTest.

    python benchmarks/imbalance.py                 # full: FER2013, fernet_fast, 8 epochs (about 1.5-2 h here)
    python benchmarks/imbalance.py --quick         # pipeline check: the 700-row sample, 1 epoch (a few minutes)

Writes ``benchmarks/results/imbalance.json`` and ``imbalance.md`` with the exact command (``--quick`` writes
``<work>/imbalance_quick.json`` / ``.md`` instead: its numbers mean nothing).  Resumable: every finished variant
leaves ``<work>/<variant>/result.json`` and is skipped on the next start; a killed training run resumes from its
last epoch.  ``--only ros,smote`` runs a subset.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ferlab.data import load_dataset  # noqa: E402
from ferlab.data.dataset import FERDataset  # noqa: E402
from ferlab.io import atomic_write  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets" / "fer2013"
FULL_DATA = SHARED / "fer2013.csv.gz"
SAMPLE_DATA = SHARED / "fer2013_sample.csv"
# FER2013 Training counts (angry, disgust, fear, happy, sad, surprise, neutral): the quick mode makes the
# balanced 700-row sample as imbalanced as the real data
FER_TRAIN_COUNTS = np.array([3995, 436, 4097, 7215, 4830, 3171, 4965])
# targeted augmentation: augmented copies ADDED per class ("+n"), as in the targeted-augmentation recipe
TARGETED = {"disgust": "+1600", "surprise": "+2000", "angry": "+1500", "fear": "+1500"}
HONEST = [  # name, overrides of the recipe, description
    ("none", {}, "no balancing"),
    ("class_weights", {"class_weights": "balanced"}, "loss weights n / (C * count)"),
    ("ros", {"balance": "ros"}, "random over-sampling to the largest class"),
    ("smote", {"balance": "smote"}, "SMOTE (k=5, pixel space) to the largest class"),
    ("smote_tomek", {"balance": "smote_tomek"}, "SMOTE, then Tomek-link removal"),
    ("targeted", {"balance": "targeted"}, "augmented copies added to the named classes"),
]
ENSEMBLE_MEMBERS = ["class_weights", "ros", "smote", "smote_tomek", "targeted"]
LEAK_METHODS = ["ros", "smote"]
RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_json(path: Path, obj) -> None:
    from ferlab.evaluation.metrics import _clean

    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(_clean(obj), indent=2)))


def read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


# ------------------------------------------------------------------------------------------------ data


def quick_data(work: Path, seed: int) -> Path:
    """The 700-row sample with its Training split sub-sampled to FER2013's class proportions (a CSV)."""
    path = work / "quick_data.csv"
    if path.exists():
        return path
    ds = load_dataset(SAMPLE_DATA)
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(ds.num_classes):
        tr = np.flatnonzero((ds.split == "Training") & (ds.labels == c))
        n = max(5, int(round(len(tr) * FER_TRAIN_COUNTS[c] / FER_TRAIN_COUNTS.max())))
        keep.append(np.sort(rng.choice(tr, size=min(n, len(tr)), replace=False)))
    keep.append(np.flatnonzero(ds.split != "Training"))
    idx = np.sort(np.concatenate(keep))

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("emotion,pixels,Usage\n")
            for i in idx:
                f.write(f"{ds.labels[i]},{' '.join(map(str, ds.images[i].ravel()))},{ds.split[i]}\n")

    atomic_write(path, write)
    return path


def _named(ds: FERDataset, split: str) -> FERDataset:
    out = ds.subset(np.arange(len(ds)))
    out.split = np.full(len(ds), split)
    return out


def leak_datasets(data: Path, method: str, protocol: str, seed: int, counts_log: list):
    """(train, val, test) of the leakage experiment on Training + PrivateTest pooled.

    before: balance the pool (allow_eval), then a stratified 80/10/10 split row by row (copies go anywhere);
    after:  the same stratified 80/10/10 split of the pool first, then balance the train part only."""
    from ferlab.data.balance import balance_dataset
    from ferlab.data.splits import stratified_split

    ds = load_dataset(data)
    pool = ds.subset(np.flatnonzero(np.isin(ds.split, ["Training", "PrivateTest"])))
    if protocol == "before":
        bal, bc = balance_dataset(pool, method, seed=seed, allow_eval=True, return_counts=True, log=False)
        parts = stratified_split(bal.labels, RATIOS, seed=seed)
        train, val, test = (bal.subset(parts == p) for p in ("train", "val", "test"))
        train = _named(train, "Training")
    else:
        parts = stratified_split(pool.labels, RATIOS, seed=seed)
        train, val, test = (pool.subset(parts == p) for p in ("train", "val", "test"))
        train, bc = balance_dataset(_named(train, "Training"), method, seed=seed, return_counts=True, log=False)
    counts_log.append(bc.to_dict())
    return train, _named(val, "PublicTest"), _named(test, "PrivateTest"), ds.by_split("PublicTest")


def nearest_train_rms(test_images: np.ndarray, train_images: np.ndarray) -> np.ndarray:
    """Per test image, the RMS grey-level distance to its nearest training image: copies are at 0, SMOTE
    interpolations of a test image sit close to it, unrelated faces are tens of grey levels away."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(train_images.reshape(len(train_images), -1)
                                                                .astype(np.float32))
    d, _ = nn.kneighbors(test_images.reshape(len(test_images), -1).astype(np.float32))
    return d[:, 0] / np.sqrt(test_images[0].size)


@contextlib.contextmanager
def fixed_data(train: FERDataset, val: FERDataset):
    """Make the trainer train on in-memory datasets (the leaky pools exist only in memory)."""
    import ferlab.training.trainer as T

    orig = T.prepare_data
    T.prepare_data = lambda cfg: (train, val)
    try:
        yield
    finally:
        T.prepare_data = orig


@contextlib.contextmanager
def record_balance(store: list):
    """Record the BalanceCounts of the balancing that the trainer's prepare_data does."""
    import ferlab.data.balance as B

    orig = B.balance_dataset

    def wrapper(*a, **k):
        out, bc = orig(*a, **{**k, "return_counts": True})
        store.append(bc.to_dict())
        return out

    B.balance_dataset = wrapper
    try:
        yield
    finally:
        B.balance_dataset = orig


# -------------------------------------------------------------------------------------------- training


def train_run(cfg, run: Path, progress: bool) -> dict:
    """Train (or resume, or reuse) a run; returns its summary."""
    from ferlab.training.trainer import Trainer

    if (run / "summary.json").exists():
        return json.loads((run / "summary.json").read_text())
    resume = (run / "last.pt").exists()
    if resume:
        log(f"  resuming {run}")
    return Trainer(cfg, run, progress=progress).fit(resume=resume)


def headline(r) -> dict:
    """The metrics the tables show, from an EvalResult."""
    return {"accuracy": r.accuracy, "accuracy_ci95": r.accuracy_ci, "balanced_accuracy": r.balanced_accuracy,
            "macro_f1": r.macro["f1"], "recall": {c: float(v) for c, v in zip(r.classes, r.recall)},
            "clean_accuracy": r.clean_accuracy, "clean_n": r.clean_n, "ece": r.ece, "n": r.n}


def run_honest(name, overrides, desc, base, data, work, args) -> dict:
    from ferlab.evaluation.evaluate import evaluate
    from ferlab.training.config import TrainConfig

    res_path = work / name / "result.json"
    if res_path.exists():
        log(f"{name}: done before, skipped")
        return read_json(res_path)
    o = dict(overrides)
    if o.get("balance") == "targeted":
        o["balance_counts"] = args.targeted_counts
    cfg = TrainConfig.from_dict({**base, **o})
    run = work / name / "run"
    log(f"{name}: training ({desc})")
    t0 = time.time()
    counts: list = []
    with record_balance(counts):
        summary = train_run(cfg, run, args.progress)
    r = evaluate(run, data, split="PrivateTest", out=work / name / "eval-PrivateTest", bootstrap=args.bootstrap,
                 progress=False)
    res = {"variant": name, "description": desc, "overrides": o, "run": str(run),
           "train_samples": summary.get("train_samples"), "balance_counts": counts[-1] if counts else None,
           "epochs": summary.get("epochs_run"), "best_epoch": summary.get("best_epoch_acc"),
           "publictest_accuracy": summary.get("best_val_acc"), "privatetest": headline(r),
           "train_minutes": round(summary.get("train_time_s", 0) / 60, 2),
           "images_per_s": round(summary.get("images_per_s_median", 0)), "wall_minutes": round((time.time() - t0) / 60, 2)}
    write_json(res_path, res)
    log(f"{name}: PublicTest {res['publictest_accuracy']:.4f}, PrivateTest {r.accuracy:.4f} "
        f"(balanced {r.balanced_accuracy:.4f}, macro-F1 {r.macro['f1']:.4f})")
    return res


def run_leak(method, protocol, base, data, work, args) -> dict:
    from ferlab.calibration import softmax
    from ferlab.evaluation.evaluate import duplicate_mask
    from ferlab.evaluation.metrics import evaluate_predictions
    from ferlab.training.build import load_run
    from ferlab.training.config import TrainConfig
    from ferlab.training.forward import predict_logits

    name = f"leak_{method}_{protocol}"
    res_path = work / name / "result.json"
    if res_path.exists():
        log(f"{name}: done before, skipped")
        return read_json(res_path)
    t0 = time.time()
    counts: list = []
    log(f"{name}: {method} {'BEFORE' if protocol == 'before' else 'after'} the 80/10/10 split of Training+PrivateTest")
    train, val, test, public = leak_datasets(data, method, protocol, args.seed, counts)
    cfg = TrainConfig.from_dict({**base, "data": f"{data} (Training+PrivateTest pooled, {method} {protocol} an "
                                                 f"80/10/10 split; built in memory by benchmarks/imbalance.py)"})
    run = work / name / "run"
    with fixed_data(train, val):
        summary = train_run(cfg, run, args.progress)
    model, _, _ = load_run(run)
    out = {}
    for split_name, part in (("own_test", test), ("publictest", public)):
        probs = softmax(predict_logits(model, part.images, cfg.input_size, amp="none"))
        r = evaluate_predictions(part.labels, probs, list(train.classes), bootstrap=args.bootstrap)
        out[split_name] = headline(r)
    copy = duplicate_mask(test.images, train.images)
    near = nearest_train_rms(test.images, train.images)
    synthetic = np.char.find(test.ids.astype(str), ":") >= 0
    res = {"variant": name, "method": method, "protocol": protocol, "run": str(run),
           "train_samples": len(train), "val_samples": len(val), "test_samples": len(test),
           "balance_counts": counts[-1] if counts else None,
           "test_rows_with_exact_copy_in_train": int(copy.sum()),
           "test_rows_with_exact_copy_in_train_share": float(copy.mean()),
           "test_rows_synthetic": int(synthetic.sum()),
           "test_nearest_train_rms_median": float(np.median(near)),
           "test_rows_within_rms_4_of_train": float((near < 4).mean()),
           "own_test": out["own_test"], "publictest": out["publictest"],
           "selection_accuracy": summary.get("best_val_acc"),
           "train_minutes": round(summary.get("train_time_s", 0) / 60, 2), "wall_minutes": round((time.time() - t0) / 60, 2)}
    write_json(res_path, res)
    log(f"{name}: own test {out['own_test']['accuracy']:.4f} (rows with a copy in train: {copy.mean():.1%}), "
        f"real PublicTest {out['publictest']['accuracy']:.4f}")
    return res


def run_ensemble(honest: dict, data, work, args) -> dict | None:
    from ferlab.ensemble import evaluate_ensemble

    res_path = work / "ensemble" / "result.json"
    if res_path.exists():
        log("ensemble: done before, skipped")
        return read_json(res_path)
    members = [m for m in ENSEMBLE_MEMBERS if m in honest]
    if len(members) < 2:
        return None
    log(f"ensemble: soft voting of {', '.join(members)} on PrivateTest")
    s = evaluate_ensemble([honest[m]["run"] for m in members], data, "PrivateTest", out=work / "ensemble" / "report",
                          bootstrap=args.bootstrap, progress=False)
    best_pub = max(members, key=lambda m: honest[m]["publictest_accuracy"])
    res = {"members": members, "ensemble": s["ensemble"],
           "member_privatetest": {m: r for m, r in zip(members, s["members"])},
           "best_member_by_publictest": best_pub,
           "best_member_privatetest_accuracy": honest[best_pub]["privatetest"]["accuracy"],
           "gain_over_best_member": s["ensemble"]["accuracy"] - honest[best_pub]["privatetest"]["accuracy"],
           "best_member_in_hindsight": s["best_member"], "command": s["command"]}
    write_json(res_path, res)
    log(f"ensemble: PrivateTest {s['ensemble']['accuracy']:.4f} vs best member ({best_pub}) "
        f"{res['best_member_privatetest_accuracy']:.4f}")
    return res


def run_features_part(honest: dict, data, work, args) -> dict | None:
    from ferlab.features import run_features

    res_path = work / "features" / "result.json"
    if res_path.exists():
        log("features: done before, skipped")
        return read_json(res_path)
    if "none" not in honest:
        return None
    log("features: CNN (none) penultimate layer + svm / rf / logreg")
    s = run_features(honest["none"]["run"], data, "all", out=work / "features" / "report", bootstrap=args.bootstrap,
                     seed=args.seed)
    write_json(res_path, s)
    return s


# ---------------------------------------------------------------------------------------------- output


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def markdown(res: dict) -> str:
    L = [f"# Class imbalance on FER2013 ({res['config']['model']}, {res['config']['epochs']} epochs)", "",
         f"Command: `{res['command']}`", "",
         f"Data: `{res['config']['data']}`; {res['machine']['cpus']} CPU cores, torch {res['machine']['torch']}; "
         f"{res['date']}." + (" QUICK MODE: a tiny pipeline check, the numbers mean nothing." if res["quick"] else ""),
         "", "## Balancing after the split (selection on PublicTest, report on PrivateTest)", ""]
    classes = None
    for v in res["variants"].values():
        classes = list(v["privatetest"]["recall"])
        break
    if classes:
        L.append("| variant | train samples | PublicTest acc | PrivateTest acc | balanced acc | macro-F1 | "
                 + " | ".join(f"recall {c}" for c in classes) + " | train min |")
        L.append("|---" * (7 + len(classes)) + "|")
        for name, v in res["variants"].items():
            p = v["privatetest"]
            L.append(f"| {name} | {v['train_samples']} | {pct(v['publictest_accuracy'])} | {pct(p['accuracy'])} | "
                     f"{pct(p['balanced_accuracy'])} | {pct(p['macro_f1'])} | "
                     + " | ".join(pct(p['recall'][c]) for c in classes) + f" | {v['train_minutes']} |")
    if res.get("leakage"):
        L += ["", "## Leakage: balancing BEFORE vs AFTER the split (Training+PrivateTest pooled, 80/10/10)", "",
              "| method | protocol | train samples | test rows with an exact copy in train | test rows synthetic | "
              "test rows within RMS 4 of a train image | median RMS to nearest train image | "
              "accuracy on its own test part | accuracy on the real PublicTest |", "|---" * 9 + "|"]
        for v in res["leakage"].values():
            L.append(f"| {v['method']} | {v['protocol']} the split | {v['train_samples']} | "
                     f"{v['test_rows_with_exact_copy_in_train']} ({pct(v['test_rows_with_exact_copy_in_train_share'])}%) | "
                     f"{v['test_rows_synthetic']} | {pct(v['test_rows_within_rms_4_of_train'])}% | "
                     f"{v['test_nearest_train_rms_median']:.1f} | {pct(v['own_test']['accuracy'])} | "
                     f"{pct(v['publictest']['accuracy'])} |")
    e = res.get("ensemble")
    if e:
        L += ["", "## Soft-voting ensemble of the balanced models (PrivateTest)", "",
              "| model | accuracy | balanced acc | macro-F1 |", "|---|---|---|---|"]
        for m, r in e["member_privatetest"].items():
            L.append(f"| {m} | {pct(r['accuracy'])} | {pct(r['balanced_accuracy'])} | {pct(r['macro_f1'])} |")
        en = e["ensemble"]
        L.append(f"| **ensemble** | **{pct(en['accuracy'])}** | {pct(en['balanced_accuracy'])} | {pct(en['macro_f1'])} |")
        L.append("")
        L.append(f"Best member by PublicTest: {e['best_member_by_publictest']} "
                 f"({pct(e['best_member_privatetest_accuracy'])}% on PrivateTest); ensemble gain "
                 f"{100 * e['gain_over_best_member']:+.1f} points.")
    f = res.get("features")
    if f:
        L += ["", f"## CNN features ({f['features']}-d, unbalanced run) + classical classifiers", "",
              "| model | chosen | PublicTest acc | PrivateTest acc | balanced acc | macro-F1 |", "|---|---|---|---|---|---|"]
        for name, r in f["results"].items():
            chosen = ", ".join(f"{k}={v:g}" for k, v in (r.get("param") or {}).items()) or "-"
            L.append(f"| {name} | {chosen} | {pct(r['val_accuracy'])} | {pct(r['accuracy'])} | "
                     f"{pct(r['balanced_accuracy'])} | {pct(r['macro_f1'])} |")
    L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="pipeline check: 700-row sample, 1 epoch")
    ap.add_argument("--data", help=f"dataset (default {FULL_DATA}; quick: the sample made imbalanced)")
    ap.add_argument("--model", default="fernet_fast")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per run (default 8; quick 1)")
    ap.add_argument("--recipe", default=None, help="base recipe (default configs/<model>.yaml, else configs/fernet.yaml; "
                                                   "model, epochs, data and seed are overridden)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default 1000; quick 100)")
    ap.add_argument("--targeted", default=None, help="targeted counts as JSON (default the +n recipe, scaled in quick)")
    ap.add_argument("--work", default=None, help="run folder (default runs/bench-imbalance[-quick])")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/imbalance[_quick].json)")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(
        [h[0] for h in HONEST] + [f"leak_{m}" for m in LEAK_METHODS] + ["ensemble", "features"]))
    ap.add_argument("--progress", action="store_true", help="progress bars while training")
    args = ap.parse_args(argv)

    from ferlab.training.config import load_config

    tag = "-quick" if args.quick else ""
    work = Path(args.work or ROOT / "runs" / f"bench-imbalance{tag}")
    work.mkdir(parents=True, exist_ok=True)
    # quick numbers mean nothing: they stay in the work folder, not in benchmarks/results
    out = Path(args.out or (work / "imbalance_quick.json" if args.quick else ROOT / "benchmarks" / "results" /
                            "imbalance.json"))
    epochs = args.epochs or (1 if args.quick else 8)
    args.bootstrap = args.bootstrap if args.bootstrap is not None else (100 if args.quick else 1000)
    data = Path(args.data) if args.data else (quick_data(work, args.seed) if args.quick else FULL_DATA)
    if args.targeted:
        args.targeted_counts = json.loads(args.targeted)
    elif args.quick:
        n_train = int((load_dataset(data).split == "Training").sum())
        args.targeted_counts = {k: f"+{max(1, round(int(v[1:]) * n_train / FER_TRAIN_COUNTS.sum()))}"
                                for k, v in TARGETED.items()}
    else:
        args.targeted_counts = dict(TARGETED)
    recipe = args.recipe
    if recipe is None:
        own = ROOT / "configs" / f"{args.model}.yaml"
        recipe = str(own if own.is_file() else ROOT / "configs" / "fernet.yaml")
    if not Path(recipe).is_file():
        ap.error(f"{recipe}: no such recipe")
    base = load_config(recipe, [f"model={args.model}", f"epochs={epochs}", f"data={data}", f"seed={args.seed}",
                                f"threads={args.threads}", "val_split=PublicTest", "val_fraction=0"]).to_dict()
    base.update(early_stopping="", balance="none", balance_counts={}, class_weights="none", sampler="none")
    only = {s.strip() for s in args.only.split(",") if s.strip()}

    def wanted(name: str) -> bool:
        return not only or name in only

    import torch

    command = shlex.join(["python", "benchmarks/imbalance.py", *(sys.argv[1:] if argv is None else argv)])
    t0 = time.time()
    log(f"imbalance benchmark: {args.model}, {epochs} epoch(s), {data}, work {work}")
    honest = {}
    for name, o, desc in HONEST:
        if wanted(name):
            honest[name] = run_honest(name, o, desc, base, data, work, args)
    leakage = {}
    for m in LEAK_METHODS:
        if wanted(f"leak_{m}"):
            for protocol in ("before", "after"):
                leakage[f"{m}_{protocol}"] = run_leak(m, protocol, base, data, work, args)
    ens = run_ensemble(honest, data, work, args) if wanted("ensemble") else None
    feats = run_features_part(honest, data, work, args) if wanted("features") else None
    res = {
        "benchmark": "class imbalance", "command": command, "quick": args.quick, "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                    "platform": platform.platform()},
        "config": {"model": args.model, "epochs": epochs, "data": str(data), "seed": args.seed, "recipe": recipe,
                   "targeted_counts": args.targeted_counts, "leak_split": RATIOS, "work": str(work),
                   "selection": "PublicTest (best epoch by accuracy)", "report": "PrivateTest"},
        "variants": honest, "leakage": leakage, "ensemble": ens, "features": feats,
        "wall_minutes_this_invocation": round((time.time() - t0) / 60, 2),
    }
    write_json(out, res)
    atomic_write(out.with_suffix(".md"), lambda tmp: Path(tmp).write_text(markdown(res)))
    log(f"wrote {out} and {out.with_suffix('.md')}")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
