"""Hyper-parameter search with Optuna around a training recipe.

Each trial trains the recipe for ``epochs`` epochs with sampled values of

- optimizer (sgd / adam / adamw) and its learning rate (log scale; SGD and the adaptive optimisers have their
  own ranges: ``lr_sgd`` 1e-3..0.2, ``lr_adaptive`` 1e-4..5e-3),
- batch size (32 / 64 / 128),
- dropout (0..0.6; only where the model's builder takes ``dropout``),
- activation (only where the model's builder takes ``activation``; the choices are those it accepts),
- learning-rate schedule (onecycle / cosine / plateau / exponential),
- augmentation strength s in [0, 1]: rotation 20s degrees, zoom 0.15s, shift 0.1s (on half the images),
  random erasing with probability 0.4s, on top of the recipe's crop and flip,

and reports its validation accuracy after every epoch; Optuna's MedianPruner stops a trial whose accuracy
falls below the median of earlier trials at the same epoch.  The objective is the trial's best validation
accuracy.  Validation is PublicTest or a stratified fraction of Training, NEVER PrivateTest.

``out`` receives one run directory per trial (``trial_NNN``), ``study.db`` (SQLite, so a killed search
resumes: run the same command again), ``trials.csv`` and ``best.yaml``: the recipe with the best trial's values,
a full recipe for ``ferlab train best.yaml`` (with the recipe's own epoch budget).
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import time
from pathlib import Path
from typing import Any

import yaml

from .errors import FerlabError
from .io import atomic_write
from .training.config import TrainConfig, load_config

OPTIMIZERS = ("sgd", "adam", "adamw")
BATCH_SIZES = (32, 64, 128)
SCHEDULERS = ("onecycle", "cosine", "plateau", "exponential")
FORBIDDEN_VAL = ("PrivateTest", "Test", "test")


def parse_val(val: str | float | None) -> tuple[str | None, float]:
    """``--val``: a split name (PublicTest) or a fraction of Training (0.1) -> (val_split, val_fraction)."""
    if val is None or val == "":
        return None, 0.0
    try:
        f = float(val)
    except (TypeError, ValueError):
        if str(val) in FORBIDDEN_VAL:
            raise FerlabError(f"--val {val}: the test split is for the final report only; tune on PublicTest or "
                              "a fraction of Training (e.g. --val 0.1)") from None
        return str(val), 0.0
    if not 0 < f < 1:
        raise FerlabError(f"--val {val}: a validation fraction must be between 0 and 1")
    return None, f


def model_space(model: str) -> dict[str, Any]:
    """Which of dropout / activation the model's builder takes (and the activations it accepts)."""
    from .models import create_model, model_entry
    from .models.layers import ACTIVATIONS

    params = inspect.signature(model_entry(model).builder).parameters
    space: dict[str, Any] = {"dropout": "dropout" in params, "activation": []}
    if "activation" in params:
        ok = []
        for a in ACTIVATIONS:
            try:
                create_model(model, activation=a)
                ok.append(a)
            except FerlabError:
                pass
        space["activation"] = ok if len(ok) > 1 else []
    return space


def augment_at(strength: float, base: dict | None) -> dict:
    s = float(strength)
    aug = dict(base or {})
    aug.update(rotate=round(20 * s, 3), scale=round(0.15 * s, 4), translate=round(0.1 * s, 4),
               affine_p=0.5, erasing=round(0.4 * s, 4))
    return aug


def suggest(trial, base: dict, space: dict) -> dict[str, Any]:
    """Overrides of the recipe dict for one trial."""
    opt = trial.suggest_categorical("optimizer", list(OPTIMIZERS))
    if opt == "sgd":
        lr = trial.suggest_float("lr_sgd", 1e-3, 0.2, log=True)
    else:
        lr = trial.suggest_float("lr_adaptive", 1e-4, 5e-3, log=True)
    o: dict[str, Any] = {"optimizer": opt, "lr": lr,
                         "batch_size": trial.suggest_categorical("batch_size", list(BATCH_SIZES)),
                         "scheduler": trial.suggest_categorical("scheduler", list(SCHEDULERS))}
    opts = dict(base.get("model_options") or {})
    if space["dropout"]:
        opts["dropout"] = round(trial.suggest_float("dropout", 0.0, 0.6), 4)
    if space["activation"]:
        opts["activation"] = trial.suggest_categorical("activation", space["activation"])
    o["model_options"] = opts
    o["augment"] = augment_at(trial.suggest_float("aug_strength", 0.0, 1.0), base.get("augment"))
    return o


def _write_trials(study, path: Path) -> list[dict]:
    rows = []
    keys: list[str] = []
    for t in study.trials:
        for k in t.params:
            if k not in keys:
                keys.append(k)
    for t in study.trials:
        dur = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start \
            else None
        r = {"number": t.number, "state": t.state.name, "value": t.value,
             "epochs_run": max(t.intermediate_values) if t.intermediate_values else 0,
             "seconds": round(dur, 1) if dur is not None else None}
        r.update({k: t.params.get(k) for k in keys})
        r["run_dir"] = t.user_attrs.get("run_dir", "")
        rows.append(r)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["number", "state", "value", "epochs_run", "seconds", *keys, "run_dir"])
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)
    return rows


def tune(recipe: str | None, out: str | Path, trials: int = 20, epochs: int = 5, val: str | float | None = None,
         overrides: list[str] | None = None, seed: int = 0, timeout: float | None = None,
         progress: bool = False, log: bool = True, command: str | None = None) -> dict[str, Any]:
    """Run (or resume) the search; returns {"best": {...}, "trials": rows, "best_yaml": path}."""
    import optuna

    from .training.trainer import Trainer

    if trials < 1 or epochs < 1:
        raise FerlabError("--trials and --epochs must be at least 1")
    base, val_fraction = _base_recipe(recipe, overrides, val)
    space = model_space(base["model"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    study = _open_study(out, seed, trials)
    done = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)
    remaining = max(trials - done, 0)
    if log and done:
        print(f"resuming: {done} trial(s) already done, {remaining} to go", flush=True)

    def objective(trial) -> float:
        o = suggest(trial, base, space)
        cfg = TrainConfig.from_dict({**base, **o, "epochs": epochs, "seed": base["seed"]})
        run_dir = out / f"trial_{trial.number:03d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("overrides", json.dumps(o))
        pruned = {"at": 0}

        def on_epoch_end(row: dict) -> bool:
            trial.report(float(row["val_acc"]), int(row["epoch"]))
            if trial.should_prune():
                pruned["at"] = int(row["epoch"])
                return True
            return False

        t0 = time.time()
        summary = Trainer(cfg, run_dir, progress=progress, log=False, on_epoch_end=on_epoch_end).fit()
        (run_dir / "last.pt").unlink(missing_ok=True)  # the trial is over: keep the weights, drop the state
        value = float(summary["best_val_acc"])
        if log:
            desc = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
            state = f"pruned after epoch {pruned['at']}" if pruned["at"] else "done"
            print(f"trial {trial.number}: best val acc {value:.4f} ({state}, {time.time() - t0:.0f} s) {desc}",
                  flush=True)
        if pruned["at"]:
            raise optuna.TrialPruned()
        return value

    def after_trial(study, trial) -> None:
        _write_trials(study, out / "trials.csv")

    if remaining:
        study.optimize(objective, n_trials=remaining, timeout=timeout, callbacks=[after_trial], catch=())
    rows = _write_trials(study, out / "trials.csv")
    return _write_best(study, out, base, rows, epochs, val_fraction, command, space)


def _write_best(study, out: Path, base: dict, rows: list[dict], epochs: int, val_fraction: float,
                command: str | None, space: dict) -> dict[str, Any]:
    """``best.yaml`` (the recipe with the best trial's values, the recipe's own epochs) and ``tune.json``."""
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise FerlabError(f"{out}: no trial completed (all pruned or failed); see trials.csv")
    best = study.best_trial
    best_over = json.loads(best.user_attrs["overrides"])
    best_cfg = TrainConfig.from_dict({**base, **best_over, "max_train_batches": 0})
    header = [
        f"# Tuned by ferlab tune: best of {len(study.trials)} trial(s) ({len(complete)} complete), "
        f"trial {best.number}, best validation accuracy {best.value:.4f} on "
        + (f"{val_fraction:.0%} of {base['train_split']}" if val_fraction else base["val_split"])
        + f" after at most {epochs} epoch(s).",
        f"# Epochs here are the recipe's ({best_cfg.epochs}); the search trained {epochs} per trial.",
        f"# Search: {command or 'ferlab tune'}",
        f"# Train: ferlab train {out / 'best.yaml'} --out runs/<name>",
    ]
    text = "\n".join(header) + "\n" + yaml.safe_dump(best_cfg.to_dict(), sort_keys=False)
    atomic_write(out / "best.yaml", lambda tmp: Path(tmp).write_text(text))
    result = {"best": {"trial": best.number, "value": best.value, "params": best.params,
                       "run_dir": best.user_attrs.get("run_dir")},
              "trials": rows, "best_yaml": str(out / "best.yaml"),
              "command": command, "space": {k: v for k, v in space.items()}}
    atomic_write(out / "tune.json", lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2, default=_jsonable)))
    return result


def _base_recipe(recipe: str | None, overrides: list[str] | None, val) -> tuple[dict, float]:
    """(the recipe every trial starts from, its validation fraction): ``val`` (a split or a fraction of
    Training) replaces the recipe's selection split, which may never be the test split."""
    base_cfg = load_config(recipe, overrides)
    val_split, val_fraction = parse_val(val)
    if val_split is None and not val_fraction:
        val_split, val_fraction = base_cfg.val_split, base_cfg.val_fraction
    if val_split in FORBIDDEN_VAL and not val_fraction:
        raise FerlabError(f"the recipe selects on {val_split}: the test split is for the final report only; "
                          "tune on PublicTest or a fraction of Training (--val 0.1)")
    base = base_cfg.to_dict()
    base["val_split"] = val_split or base["val_split"]
    base["val_fraction"] = val_fraction
    return base, val_fraction


def _open_study(out: Path, seed: int, trials: int):
    """The study in ``out/study.db`` (created or resumed); trials a killed search left running are failed."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="ferlab-tune", storage=f"sqlite:///{(out / 'study.db').resolve()}", load_if_exists=True,
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=min(3, max(trials - 1, 1)), n_warmup_steps=1))
    for t in study.trials:  # trials of a killed search that never finished
        if t.state == optuna.trial.TrialState.RUNNING:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return study


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)
