"""Training recipes: a dataclass loaded from YAML, with ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import FerlabError


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
    amp: str = "bf16"                # bf16 | none
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
    max_train_batches: int = 0       # for smoke tests: stop an epoch after this many batches

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FerlabError(f"unknown config key(s): {', '.join(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise FerlabError(f"override {text!r} is not key=value")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value) if value.strip() else ""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """A recipe file (YAML) plus ``key=value`` overrides (``augment.rotate=10`` sets a nested key)."""
    d: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise FerlabError(f"{p}: no such recipe file")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise FerlabError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(d, dict):
            raise FerlabError(f"{p}: a recipe must be a mapping of keys to values")
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
