"""Training recipes: a dataclass loaded from YAML, with ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import FerlabError, OptionError
from ..io import portable_path


@dataclass
class TrainConfig:
    model: str = "fernet"
    model_options: dict[str, Any] = field(default_factory=dict)
    data: str = "../shared/datasets/fer2013/fer2013.csv.gz"
    labels: str = "fer2013"          # fer2013 | ferplus-majority | ferplus-probability | ferplus-crossentropy | ferplus-multitarget
    classes: list[str] | None = None  # class subset (e.g. six classes without disgust); None = all
    train_split: str = "Training"
    val_split: str = "PublicTest"    # model selection split; never PrivateTest
    val_fraction: float = 0.0        # >0: carve a stratified validation split from Training instead
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"           # sgd | adam | adamw | rmsprop
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    scheduler: str = "onecycle"      # onecycle | cosine | plateau | exponential | none
    warmup_epochs: float = 0.0
    gamma: float = 0.95              # ExponentialLR decay per epoch
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    label_smoothing: float = 0.1
    class_weights: str = "none"      # none | balanced | sqrt
    sampler: str = "none"            # none | weighted
    mixup: float = 0.0               # Beta(a, a); 0 = off
    cutmix: float = 0.0
    augment: dict[str, Any] = field(default_factory=lambda: {"crop": 44, "flip": 0.5})
    input_size: int = 44             # network input side at evaluation (centre crop of the 48x48 image)
    amp: str = "auto"                # auto (bf16 where the hardware has it natively, else none) | bf16 | none
    device: str = "cpu"
    threads: int = 0                 # torch threads (0 = torch default)
    seed: int = 0
    early_stopping: str = ""         # metric to watch ("val_acc" or "val_loss"); empty = off
    patience: int = 10
    restore_best: bool = True
    select_metric: str = "val_acc"   # which best checkpoint is the run's result: val_acc | val_loss
    freeze: str = "none"             # none | backbone | all_but_head_and_stem
    unfreeze_top: int = 0            # second fine-tuning stage: unfreeze the top N blocks
    freeze_bn: bool = True           # keep BatchNorm layers frozen while fine-tuning
    backbone_lr_scale: float = 1.0   # learning rate of non-head parameters relative to lr
    cache_features: bool = False     # with freeze: backbone, extract features once and train only the head
    init: str = ""                   # local state dict to start from (safetensors or weights-only torch)
    stages: list[dict[str, Any]] = field(default_factory=list)  # two-stage fine-tuning: per-stage overrides
    extra_data: list[str] = field(default_factory=list)         # auxiliary labelled folders (Training only)
    balance: str = "none"            # none | ros | rus | smote | smote_tomek | smote_enn | tomek | targeted | max
    balance_counts: dict[str, int] = field(default_factory=dict)
    eval_every: int = 1
    teacher: str = ""                # knowledge distillation: cached logits (.npz, `ferlab teacher`) or a model run
    #                                  on every augmented batch (a bundled name or an .onnx file)
    kd_alpha: float = 0.0            # weight of the distillation term (0 = off); 1 - kd_alpha on the labels
    kd_temperature: float = 4.0      # softening temperature of teacher and student in the KD term
    ema: float = 0.0                 # decay of an exponential moving average of the weights (0 = off; e.g.
                                     # 0.999): validation, selection and model.safetensors use the average
    max_train_batches: int = 0       # for smoke tests: stop an epoch after this many batches

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        validate(d)  # every key's type and range, before anything runs (see RULES)
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise FerlabError(f"override {text!r} is not key=value")
    key, value = text.split("=", 1)
    if re.fullmatch(r"\s*\+\d+\s*", value):  # YAML reads +10 as 10; keep the sign: balance_counts.CLASS=+10
        return key.strip().split("."), value.strip()  # is "add 10" (other keys refuse the string)
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        raise OptionError(f"override {text!r}: the value is not valid YAML") from None
    return key.strip().split("."), parsed


def resolve_data_path(value: str, recipe_dir: Path | None = None) -> str:
    """Where a recipe's relative data path points: beside the recipe file, else under ``$FERLAB_DATA``,
    else (as written) from the current folder, which is how the recipes in configs/ are written
    (``../shared/datasets/...``, run from the repository root).  The first that exists wins; when none
    does the path stays as written (and the error names it)."""
    if not isinstance(value, str) or not value or os.path.isabs(value):
        return value
    tries = [recipe_dir / value] if recipe_dir is not None else []
    if os.environ.get("FERLAB_DATA"):
        tries.append(Path(os.environ["FERLAB_DATA"]) / value)
    for cand in tries:
        if cand.exists():
            found = portable_path(os.path.normpath(cand.resolve()))
            return value if Path(value).exists() and Path(value).resolve() == Path(found).resolve() else found
    return value


def resolve_recipe_paths(d: dict[str, Any], recipe_dir: Path | None) -> dict[str, Any]:
    """``data`` and ``extra_data`` of a recipe file resolved with ``resolve_data_path``."""
    out = dict(d)
    if "data" in out:
        out["data"] = resolve_data_path(out["data"], recipe_dir)
    if isinstance(out.get("extra_data"), list):
        out["extra_data"] = [resolve_data_path(v, recipe_dir) for v in out["extra_data"]]
    return out


def read_yaml(path: str | Path, what: str = "recipe") -> Any:
    """The YAML document of a recipe or run config file, or a one-line ``FerlabError`` naming the file when it
    is not UTF-8 text (UTF-16, Latin-1, an image, binary) or not valid YAML.  An empty file gives None."""
    p = Path(path)
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise FerlabError(f"{p}: not UTF-8 text (byte {e.start}); a {what} is a YAML file saved as UTF-8") from None
    except yaml.YAMLError as e:
        raise FerlabError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise FerlabError(f"{p}: not valid YAML (nested too deeply)") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """A recipe file (YAML) plus ``key=value`` overrides (``augment.rotate=10`` sets a nested key)."""
    d: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise FerlabError(f"{p}: no such recipe file")
        d = read_yaml(p) or {}
        if not isinstance(d, dict):
            raise FerlabError(f"{p}: a recipe must be a mapping of keys to values")
        d = resolve_recipe_paths(d, p.parent)
    base = TrainConfig().to_dict()
    base.update(d)
    for ov in overrides or []:
        keys, value = parse_override(ov)
        node = base
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return TrainConfig.from_dict(base)


# ----------------------------------------------------------------------------------------------- validation
# Every recipe key has one rule here: its type and range, checked eagerly (``TrainConfig.from_dict``) before
# any data is loaded or anything is written.  A rule is a function value -> problem text (None when fine);
# to add a key, add its field above and one line here (tests/test_hardening_cli.py fails on a key without one).
Rule = Callable[[Any], "str | None"]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def Int(lo: int, hi: int | None = None) -> Rule:
    def rule(v):
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            return f"must be an integer {'>= ' + str(lo) if hi is None else f'from {lo} to {hi}'}"
        return None
    return rule


def Num(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Rule:
    def rule(v):
        if (not _is_num(v) or v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi)):
            return f"must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        return None
    return rule


def OneOf(*choices: str) -> Rule:
    def rule(v):
        return None if v in choices else f"must be one of {', '.join(repr(c) for c in choices)}"
    return rule


def Matches(pattern: str, what: str) -> Rule:
    def rule(v):
        return None if isinstance(v, str) and re.fullmatch(pattern, v) else f"must be {what}"
    return rule


def Text(allow_empty: bool = True) -> Rule:
    def rule(v):
        ok = isinstance(v, str) and (allow_empty or v.strip())
        return None if ok else f"must be {'a' if allow_empty else 'a non-empty'} string"
    return rule


def Bool(v):
    return None if isinstance(v, bool) else "must be true or false"


def Mapping_(v):
    return None if isinstance(v, dict) else "must be a mapping (key: value)"


def ListOf(item: Rule) -> Rule:
    def rule(v):
        if not isinstance(v, list):
            return "must be a list"
        for i, x in enumerate(v):
            problem = item(x)
            if problem:
                return f"item {i} {problem}"
        return None
    return rule


def _classes(v):
    if v is None:
        return None
    if not isinstance(v, list) or len(v) < 2 or not all(isinstance(c, str) and c for c in v) or len(set(v)) != len(v):
        return "must be a list of at least 2 distinct class names (or null for all)"
    return None


def _counts(v):
    if not isinstance(v, dict):
        return "must be a mapping class -> count"
    for k, n in v.items():
        relative = isinstance(n, str) and re.fullmatch(r"\+\d{1,8}", n.strip())
        if not isinstance(k, str) or not (relative or (_is_int(n) and 0 <= n <= 10_000_000)):
            return f"{k}: must be a count from 0 to 10000000, or '+n' to add n images (got {n!r})"
    return None


#: augmentation options (``augment.KEY``): the same names as ``ferlab.data.augment.AugmentConfig``
AUGMENT_RULES: dict[str, Rule] = {
    "crop": Int(0, 48), "flip": Num(0, 1), "rotate": Num(0, 180), "scale": Num(0, 0.9), "translate": Num(0, 0.5),
    "shear": Num(0, 60), "affine_p": Num(0, 1), "resized_crop": Num(0, 1), "brightness": Num(0, 1),
    "contrast": Num(0, 1), "noise": Num(0, 255), "erasing": Num(0, 1),
}


def _augment_options() -> list[str]:
    """The option names ``AugmentConfig`` has (the table above when torch is not installed)."""
    try:
        from ..data.augment import AugmentConfig
    except ImportError:
        return list(AUGMENT_RULES)
    return [f.name for f in dataclasses.fields(AugmentConfig)]


def _augment(v):
    if not isinstance(v, dict):
        return "must be a mapping of augmentation options, e.g. {crop: 44, flip: 0.5}"
    known = _augment_options()
    for k, x in v.items():
        if k not in known:
            return f"has an unknown option {k!r} (known: {', '.join(known)})"
        problem = AUGMENT_RULES.get(k, Num(0, 1000))(x)  # an option without its own rule: a number >= 0
        if problem:
            return f".{k} {problem} (got {x!r})"
    return None


def _stages(v):
    if not isinstance(v, list):
        return "must be a list of per-stage overrides"
    for i, stage in enumerate(v):
        if not isinstance(stage, dict):
            return f"item {i} must be a mapping of overrides"
        problem = _problems({k: x for k, x in stage.items()}, nested=True)
        if problem:
            return f"item {i}: {problem}"
    return None


LABEL_SCHEMES = ("fer2013", "ferplus-majority", "ferplus-probability", "ferplus-crossentropy", "ferplus-multitarget")

RULES: dict[str, Rule] = {
    "model": Text(allow_empty=False), "model_options": Mapping_, "data": Text(allow_empty=False),
    "labels": Matches(r"fer2013|ferplus7?-(majority|probability|crossentropy|multitarget)",
                      f"a label scheme ({', '.join(LABEL_SCHEMES)}; ferplus7-<mode> for 7 classes)"),
    "classes": _classes, "train_split": Text(False), "val_split": Text(False), "val_fraction": Num(0, 0.9),
    "epochs": Int(1, 100_000), "batch_size": Int(1, 65_536), "optimizer": OneOf("sgd", "adam", "adamw", "rmsprop"),
    "lr": Num(0, 10, lo_open=True), "momentum": Num(0, 1, hi_open=True), "nesterov": Bool,
    "weight_decay": Num(0, 1), "scheduler": OneOf("onecycle", "cosine", "plateau", "exponential", "none"),
    "warmup_epochs": Num(0, 100_000), "gamma": Num(0, 1, lo_open=True), "plateau_patience": Int(0, 100_000),
    "plateau_factor": Num(0, 1, lo_open=True, hi_open=True), "label_smoothing": Num(0, 1, hi_open=True),
    "class_weights": OneOf("none", "balanced", "sqrt"), "sampler": OneOf("none", "weighted"),
    "mixup": Num(0, 100), "cutmix": Num(0, 100), "augment": _augment, "input_size": Int(8, 48),
    "amp": OneOf("auto", "bf16", "fp16", "none"),
    "device": Matches(r"cpu|cuda(:\d+)?|mps", "cpu, cuda, cuda:N or mps"),
    "threads": Int(0, 1024), "seed": Int(0, 2**32 - 1), "early_stopping": OneOf("", "val_acc", "val_loss"),
    "patience": Int(1, 100_000), "restore_best": Bool, "select_metric": OneOf("val_acc", "val_loss"),
    "freeze": OneOf("none", "backbone", "all_but_head_and_stem"), "unfreeze_top": Int(0, 10_000),
    "freeze_bn": Bool, "backbone_lr_scale": Num(0, 100), "cache_features": Bool, "init": Text(),
    "stages": _stages, "extra_data": ListOf(Text(False)),
    "balance": OneOf("none", "ros", "rus", "smote", "smote_tomek", "smote_enn", "tomek", "targeted", "max"),
    "balance_counts": _counts, "eval_every": Int(1, 100_000), "max_train_batches": Int(0),
    "teacher": Text(), "kd_alpha": Num(0, 1), "kd_temperature": Num(0, 100, lo_open=True),
    "ema": Num(0, 1, hi_open=True),
}


def _problems(d: dict[str, Any], nested: bool = False) -> str | None:
    """The first problem of recipe ``d`` (unknown key, or a value outside its rule), or None."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - known - ({"stages"} if nested else set()))
    if unknown:
        return f"unknown config key(s): {', '.join(unknown)}"
    if nested and "stages" in d:
        return "a stage cannot have stages of its own"
    for key, value in d.items():
        rule = RULES.get(key)
        problem = rule(value) if rule else None
        if problem:
            return f"{key}: {problem} (got {str(value)[:60]!r})" if not problem.startswith(".") else \
                f"{key}{problem}"
    return None


def validate(d: dict[str, Any]) -> None:
    """Refuse a recipe with an unknown key or a value outside its type and range (one-line ``OptionError``)."""
    problem = _problems(d)
    if problem:
        raise OptionError(problem)


def check_runnable(cfg: TrainConfig) -> None:
    """What only this machine can tell, checked before a run starts: the device exists."""
    if cfg.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise OptionError(f"device: {cfg.device!r} but this torch build or machine has no CUDA device; "
                              "use device=cpu")
        index = int(cfg.device.split(":")[1]) if ":" in cfg.device else 0
        if index >= torch.cuda.device_count():
            raise OptionError(f"device: {cfg.device!r} but there are {torch.cuda.device_count()} CUDA devices")
    if cfg.device == "mps":
        import torch

        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise OptionError("device: 'mps' but no Apple GPU is available; use device=cpu")
