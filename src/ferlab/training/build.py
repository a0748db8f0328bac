"""What a recipe builds: its model and its data; and the model of a finished (or running) run directory.

``prepare_data`` is the one place "the data for a model" is prepared (the dataset, the class subset, the
train/validation split, extra folders, balancing); ``build_model`` the one place a recipe's network is made
(``create_model`` plus pretrained weights and freezing); ``load_run`` gives back a run's network in eval mode.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from ..data import load_dataset
from ..data.balance import balance_dataset
from ..data.folders import load_folder, merge_training
from ..data.splits import select_classes, stratified_split
from ..errors import FerlabError
from ..inference.crop import FaceCropper
from ..labels import FER2013_CLASSES, FERPLUS_CLASSES
from ..models import create_model
from ..models.weights import load_state_dict
from .config import TrainConfig
from .rundir import RunDir


def build_model(cfg: TrainConfig, num_classes: int) -> torch.nn.Module:
    opts = {k: v for k, v in cfg.model_options.items() if not k.startswith("_")}
    model = create_model(cfg.model, num_classes=num_classes, in_chans=1, **opts)
    if cfg.init:
        from ..models.transfer import load_pretrained

        load_pretrained(model, cfg.init)
    if cfg.freeze != "none":
        from ..models.transfer import apply_freeze

        apply_freeze(model, cfg.freeze)
    if cfg.unfreeze_top:
        from ..models.transfer import unfreeze_top

        unfreeze_top(model, cfg.unfreeze_top, freeze_bn=cfg.freeze_bn)
    return model


def _split_train_val(ds, cfg: TrainConfig):
    if cfg.val_split == "PrivateTest" or cfg.train_split == "PrivateTest":
        raise FerlabError("PrivateTest is for the final report only: select models on PublicTest "
                          "or a validation split carved from Training (val_fraction)")
    train = ds.by_split(cfg.train_split)
    if cfg.val_fraction > 0:
        parts = stratified_split(train.labels, {"train": 1 - cfg.val_fraction, "val": cfg.val_fraction},
                                 seed=cfg.seed)
        return train.subset(parts == "train"), train.subset(parts == "val")
    return train, ds.by_split(cfg.val_split)


def prepare_data(cfg: TrainConfig):
    """(train, validation) datasets of a recipe; the photos of labelled folders (``data``, ``extra_data``)
    are face-cropped the way ``ferlab predict`` crops them (``FaceCropper``)."""
    cropper = FaceCropper()
    ds = load_dataset(cfg.data, labels=cfg.labels, votes=cfg.model_options.get("_votes"), cropper=cropper)
    if cfg.classes:
        ds = select_classes(ds, cfg.classes)
    train, val = _split_train_val(ds, cfg)
    train = train.subset(train.labels >= 0) if train.soft is None else train
    if cfg.extra_data:
        for folder in cfg.extra_data:
            train = merge_training(train, load_folder(folder, classes=train.classes, cropper=cropper))
    if cfg.balance != "none":
        train = balance_dataset(train, cfg.balance, counts=cfg.balance_counts, seed=cfg.seed)
    return train, val


def targets(ds, cfg: TrainConfig) -> torch.Tensor:
    """Per-sample training target: one-hot (hard labels) or the soft/multi-target array."""
    if ds.soft is not None and cfg.labels.split("-")[-1] in ("probability", "crossentropy", "multitarget"):
        return torch.as_tensor(ds.soft, dtype=torch.float32)
    return F.one_hot(torch.as_tensor(ds.labels), ds.num_classes).float()


def load_run(run_dir: str | os.PathLike, weights: str = "model") -> tuple[torch.nn.Module, dict, TrainConfig]:
    """(model in eval mode, summary, config) of a finished or running run directory."""
    run = RunDir(run_dir)
    cfg = run.read_config()
    wfile = run.weights(weights)
    summary = run.read_summary()
    state = load_state_dict(wfile)
    classes = summary.get("classes")
    num_classes = len(classes) if classes else int(next(v for k, v in state.items() if k.endswith("head.weight")
                                                         or k.endswith("fc.weight")).shape[0])
    model = build_model(TrainConfig.from_dict({**cfg.to_dict(), "init": "", "freeze": "none"}), num_classes)
    model.load_state_dict(state)
    model.eval()
    if hasattr(model, "deploy"):  # training-only branches (RepVGG) folded away: what is evaluated is what ships
        model.deploy()
    if not classes:
        classes = list(FERPLUS_CLASSES if cfg.labels.startswith("ferplus") else FER2013_CLASSES)[:num_classes]
        summary["classes"] = classes
    summary.setdefault("input_size", cfg.input_size)
    return model, summary, cfg
