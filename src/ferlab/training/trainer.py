"""The trainer: in-memory uint8 data, batched augmentation, bf16 autocast, resumable runs.

``Trainer(cfg, run_dir).fit()`` trains one recipe into one run directory (every file written through its
``training.rundir.RunDir``); the model and data come from ``training.build``, the forward pass (normalisation,
precision, validation logits) from ``training.forward``.  The loop trains and validates; what happens after
each epoch (best weights, ``last.pt``, metrics, early stopping) is ``training.callbacks``.  ``training.launch.train`` chooses between this loop, the cached-feature
head fit (``training.headfit``) and staged recipes.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import FerlabError
from ..hardware import machine_info
from ..io import portable_path
from ..models import count_params
from .build import build_model, prepare_data, targets
from .callbacks import Callback, default_callbacks, validated_model
from .config import TrainConfig
from .distill import kd_loss
from .ema import WeightAverage
from .forward import NORM_MEAN, NORM_STD, autocast, measure_bf16_ratio, normalize, predict_logits, resolve_amp
from .losses import class_weights, mix_batch, multi_target_loss, soft_cross_entropy
from .rundir import RunDir
from .schedule import Plateau, lr_at


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    name = cfg.optimizer.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise FerlabError(f"unknown optimizer {cfg.optimizer!r}; choose sgd, adam, adamw or rmsprop")


def dist_world() -> tuple[int, int]:
    """(rank, world size) when launched by torchrun, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def param_groups(model: torch.nn.Module, backbone_lr_scale: float) -> list[dict]:
    """Trainable parameters split into head and backbone groups (the backbone's rate is scaled)."""
    head = getattr(model, "head", None)
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, torch.nn.Module) else set()
    groups = [{"params": [p for p in model.parameters() if p.requires_grad and id(p) in head_ids], "lr_scale": 1.0},
              {"params": [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids],
               "lr_scale": backbone_lr_scale}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise FerlabError("no trainable parameters (check freeze / unfreeze_top)")
    return groups


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: str | Path, progress: bool = True, log: bool = True,
                 on_epoch_end=None, callbacks: list[Callback] | None = None):
        """``on_epoch_end(row) -> bool``: called with each epoch's metrics row; True stops the run.
        ``callbacks``: what runs after each epoch (default: ``callbacks.default_callbacks``)."""
        self.cfg, self.run_dir, self.progress, self.log = cfg, Path(run_dir), progress, log
        self.rundir = RunDir(run_dir)
        self.on_epoch_end = on_epoch_end
        self.callbacks = default_callbacks(on_epoch_end) if callbacks is None else list(callbacks)

    def fit(self, resume: bool = False) -> dict:
        cfg, run = self.cfg, self.run_dir
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        rank, world = dist_world()
        if world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("gloo" if cfg.device == "cpu" else "nccl")
        main_proc = rank == 0
        train, val = prepare_data(cfg)
        classes = train.classes
        model = build_model(cfg, len(classes)).to(cfg.device)
        teacher = self._teacher(train)
        self.amp = self._choose_amp(model, train, main_proc)
        cfg = self.cfg = dataclasses.replace(cfg, amp=self.amp["used"])  # config.yaml keeps the recipe's value
        opt = make_optimizer(cfg, param_groups(model, cfg.backbone_lr_scale))
        run.mkdir(parents=True, exist_ok=True)  # only once data and model are known to be good
        if not resume:
            self.rundir.write_config({**cfg.to_dict(), "amp": self.amp["requested"]})
        weights = class_weights(train.labels, len(classes), cfg.class_weights)
        from ..data.augment import Augmenter

        loop = SimpleNamespace(
            model=model, net=torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model, opt=opt,
            rank=rank, world=world, main_proc=main_proc, teacher=teacher, train=train,
            weights=weights.to(cfg.device) if weights is not None else None,
            x_train=torch.as_tensor(train.images), y_train=targets(train, cfg),
            aug=Augmenter(cfg.augment, seed=cfg.seed + 1000 * rank), gen=torch.Generator().manual_seed(cfg.seed + 1),
            plateau=Plateau(cfg.plateau_factor, cfg.plateau_patience), rows=[], start_epoch=0, elapsed=0.0,
            best={"val_acc": -1.0, "val_loss": float("inf"), "epoch_acc": -1, "epoch_loss": -1},
            ema=WeightAverage(model, cfg.ema) if cfg.ema else None)
        if resume:
            self._restore(loop)
        n = len(loop.x_train)
        loop.steps = n // cfg.batch_size if n >= cfg.batch_size else 1
        if cfg.max_train_batches:
            loop.steps = min(loop.steps, cfg.max_train_batches)
        for epoch in range(loop.start_epoch, cfg.epochs):
            t0 = time.time()
            stats = self._train_epoch(loop, epoch)
            # validation, logging and checkpoints happen on the main process; the others wait for its verdict
            verdict = torch.zeros(2)
            if main_proc:
                stop = self._end_epoch(loop, epoch, (*stats, time.time() - t0, t0), val.images, val.labels)
                verdict[:] = torch.tensor([float(stop), loop.plateau.scale])
            if world > 1:
                torch.distributed.broadcast(verdict, 0)
                loop.plateau.scale = float(verdict[1])
            loop.elapsed += time.time() - t0
            if verdict[0].item():
                break
        if world > 1:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
            if not main_proc:
                return {}
        return self._finish(loop.ema.module if loop.ema else model, loop.rows, loop.best, classes, train, val,
                            loop.elapsed)

    def _restore(self, loop: SimpleNamespace) -> None:
        """Put the model, optimiser, random generators, schedule state and rows of ``last.pt`` into ``loop``."""
        cfg, run = self.cfg, self.run_dir
        if self.rundir.finished() and not self.rundir.has_state():
            raise FerlabError(f"{run}: run already finished")
        if not self.rundir.has_state():
            raise FerlabError(f"{run}: nothing to resume (no last.pt)")
        st = self.rundir.load_state()
        loop.model.load_state_dict(st["model"])
        if int(st["epoch"]) >= cfg.epochs:
            if self.log:
                print(f"{run}: all {cfg.epochs} epochs already done", flush=True)
        loop.opt.load_state_dict(st["optimizer"])
        if loop.ema is not None:
            if "ema" not in st:
                raise FerlabError(f"{run}: this run was started without ema; resume it with the same recipe")
            loop.ema.load_state_dict(st["ema"])
        loop.start_epoch, loop.best, loop.elapsed = int(st["epoch"]), dict(st["best"]), float(st["elapsed"])
        loop.aug.g.set_state(st["aug_rng"])
        loop.gen.set_state(st["gen_rng"])
        torch.set_rng_state(st["torch_rng"])
        loop.plateau = Plateau(cfg.plateau_factor, cfg.plateau_patience, dict(st["plateau"]))
        loop.rows = [dict(r) for r in st["rows"]] if st.get("rows") else self.rundir.read_metrics()[:loop.start_epoch]

    def _train_epoch(self, loop: SimpleNamespace, epoch: int) -> tuple[float, int, int]:
        """One pass over the training data; (summed loss, correct, seen).  Sets ``loop.lr`` to the last rate."""
        cfg = self.cfg
        t0 = time.time()
        loop.model.train()
        perm = self._epoch_order(loop.train, loop.gen, len(loop.x_train))
        tot_loss, tot_correct, seen = 0.0, 0, 0
        bar = _bar(loop.steps, f"epoch {epoch + 1}/{cfg.epochs}", self.progress) if loop.main_proc else None
        for step in range(loop.steps):
            lr = loop.lr = lr_at(cfg, epoch + step / loop.steps, loop.plateau.scale)
            for gparam in loop.opt.param_groups:
                gparam["lr"] = lr * gparam.get("lr_scale", 1.0)
            idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size][loop.rank::loop.world]
            y = loop.y_train[idx].to(cfg.device)
            # mixed in grey levels (normalising is affine, so it commutes with mixing): an online teacher is
            # shown the very images the student sees, mixed ones included
            views, y_mix = mix_batch(loop.aug(loop.x_train[idx]), y, loop.gen, cfg.mixup, cfg.cutmix)
            x = normalize(views).to(cfg.device)
            with autocast(cfg):
                logits = loop.net(x)
            if cfg.labels.endswith("multitarget"):
                loss = multi_target_loss(logits, y_mix)
            else:
                loss = soft_cross_entropy(logits, y_mix, loop.weights, cfg.label_smoothing)
            if loop.teacher is not None:
                t_logits, t_has = (loop.teacher(views), None) if callable(loop.teacher) else \
                    (loop.teacher[0][idx], loop.teacher[1][idx].to(cfg.device))
                loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * kd_loss(
                    logits, t_logits.to(cfg.device), cfg.kd_temperature, t_has)
            loop.opt.zero_grad(set_to_none=True)
            loss.backward()
            loop.opt.step()
            if loop.ema is not None:
                loop.ema.update()
            bs = len(idx)
            tot_loss += loss.item() * bs
            tot_correct += int((logits.argmax(1) == y.argmax(1)).sum())
            seen += bs
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{tot_loss / seen:.3f}", acc=f"{tot_correct / seen:.3f}", lr=f"{lr:.4f}",
                                ips=f"{seen / (time.time() - t0):.0f}")
        if bar is not None:
            bar.close()
        return tot_loss, tot_correct, seen

    def _teacher(self, train):
        """Cached teacher logits aligned with the training samples, or None without distillation."""
        cfg = self.cfg
        if cfg.kd_alpha <= 0:
            return None
        if not cfg.teacher:
            raise FerlabError("kd_alpha > 0 needs teacher=FILE.npz (make one with `ferlab teacher RUN...`) or a model "
                              "(teacher=default, teacher=MODEL.onnx)")
        from .distill import OnnxTeacher, is_model_teacher, load_teacher

        if is_model_teacher(cfg.teacher):
            return OnnxTeacher(cfg.teacher, train.classes, cfg.input_size, threads=cfg.threads or 1)
        if cfg.mixup or cfg.cutmix:
            raise FerlabError("cached teacher logits belong to unmixed images: mixup or cutmix needs a teacher run "
                              "on every batch (teacher: default, or teacher: MODEL.onnx)")
        return load_teacher(cfg.teacher, train.ids, train.classes)

    def _choose_amp(self, model, train, main_proc: bool) -> dict:
        """Resolve ``amp`` for this hardware (``forward.resolve_amp``: with ``auto`` on a CPU with native bf16,
        timed on this model and a real batch; one process alone, not under DDP, where every rank must agree).
        A forced bf16 where it is emulated warns once with the measured slowdown."""
        cfg = self.cfg
        x = normalize(torch.as_tensor(train.images[:cfg.batch_size]).float()[:, None])
        x = x[..., :cfg.input_size, :cfg.input_size].to(cfg.device)
        measure = torch.device(cfg.device).type == "cpu" and dist_world()[1] == 1
        info = resolve_amp(cfg.amp, cfg.device, model if measure else None, x)
        if info["used"] == "bf16" and "emulated" in info["reason"]:
            slow = info["bf16_over_fp32_step_time"] = round(measure_bf16_ratio(model, x), 2)
            if main_proc:
                warnings.warn(f"amp=bf16 on a CPU without native bf16: one training step measured {slow:.1f}x "
                              "slower than fp32 here; amp=auto (the default) would choose fp32", stacklevel=2)
        if self.log and main_proc:
            print(f"precision: {'bf16' if info['used'] == 'bf16' else 'fp32'} ({info['reason']})", flush=True)
        return info

    def _end_epoch(self, loop: SimpleNamespace, epoch: int, stats: tuple, val_x, val_y) -> bool:
        """Validate one finished epoch, then run the callbacks on its row; True when one says stop."""
        loop.rows.append(self._validate(loop, epoch, stats, val_x, val_y))
        return any(cb.on_epoch_end(self, loop, loop.rows[-1]) for cb in self.callbacks)  # stops at the first True

    def _validate(self, loop: SimpleNamespace, epoch: int, stats: tuple, val_x, val_y) -> dict:
        """The epoch's metrics row (validation of ``callbacks.validated_model``: the weight average with
        ``ema``); steps the plateau schedule."""
        cfg = self.cfg
        tot_loss, tot_correct, seen, train_time, t0 = stats
        val_logits = predict_logits(validated_model(loop), val_x, cfg.input_size, amp=cfg.amp, device=cfg.device)
        val_loss = float(F.cross_entropy(torch.as_tensor(val_logits), torch.as_tensor(val_y)))
        val_acc = float((val_logits.argmax(1) == val_y).mean())
        if cfg.scheduler == "plateau":
            loop.plateau.step(val_loss)
        elapsed = loop.elapsed + (time.time() - t0)
        return {"epoch": epoch + 1, "train_loss": tot_loss / seen, "train_acc": tot_correct / seen,
                "val_loss": val_loss, "val_acc": val_acc, "lr": loop.lr, "images_per_s": seen / train_time,
                "epoch_s": time.time() - t0, "elapsed_s": elapsed}

    def _epoch_order(self, train, gen, n):
        if self.cfg.sampler == "weighted":
            counts = np.bincount(train.labels, minlength=train.num_classes)
            w = torch.as_tensor(1.0 / np.maximum(counts[train.labels], 1), dtype=torch.float64)
            return torch.multinomial(w, n, replacement=True, generator=gen)
        if self.cfg.sampler != "none":
            raise FerlabError(f"unknown sampler {self.cfg.sampler!r} (none, weighted)")
        return torch.randperm(n, generator=gen)

    def _finish(self, model, rows, best, classes, train, val, elapsed) -> dict:
        return finish_run(self.cfg, self.run_dir, model, rows, best, classes, train, val, elapsed,
                          amp=getattr(self, "amp", None))


def finish_run(cfg: TrainConfig, run_dir: str | Path, model, rows: list[dict], best: dict, classes, train, val,
               elapsed: float, amp: dict | None = None) -> dict:
    """Keep the selected weights as ``model.safetensors`` and write ``summary.json``; returns the summary.
    Shared by the training loop and the cached-feature head fit (``training.headfit``)."""
    run = RunDir(run_dir)
    key = "acc" if cfg.select_metric == "val_acc" else "loss"
    src = run.weights_path(f"best_{key}")
    restored = bool(cfg.restore_best and src.exists())
    if restored:
        run.copy_weights(src)
    else:
        run.save_weights(model)
    # the epoch whose weights model.safetensors holds, and its validation numbers (reports name this one)
    sel_epoch = best[f"epoch_{key}"] if restored else len(rows)
    sel_row = next((r for r in rows if int(r["epoch"]) == sel_epoch), {})
    ips = [r["images_per_s"] for r in rows]
    summary = {
        "model": cfg.model, "model_options": {k: v for k, v in cfg.model_options.items() if not k.startswith("_")},
        "classes": list(classes), "input_size": cfg.input_size, "labels": cfg.labels,
        "normalization": {"scale": 1 / 255, "mean": NORM_MEAN, "std": NORM_STD},
        "params": count_params(model), "epochs_run": len(rows), "epochs": cfg.epochs,
        "best_epoch_acc": best["epoch_acc"], "best_val_acc": best["val_acc"],
        "best_epoch_loss": best["epoch_loss"], "best_val_loss": best["val_loss"],
        "selected": f"best_{key}" if restored else "last", "selected_epoch": sel_epoch,
        "selected_val_acc": sel_row.get("val_acc"), "selected_val_loss": sel_row.get("val_loss"),
        "val_split": cfg.val_split if not cfg.val_fraction else
        f"{cfg.val_fraction:.0%} of {cfg.train_split}", "train_samples": len(train), "val_samples": len(val),
        "world_size": dist_world()[1], "seed": cfg.seed,
        "train_time_s": elapsed, "images_per_s_median": float(np.median(ips)) if ips else 0.0,
        "amp": amp or {"requested": cfg.amp, "used": cfg.amp}, "machine": machine_info(),
    }
    if cfg.kd_alpha > 0:
        summary["distillation"] = {"teacher": portable_path(cfg.teacher), "kd_alpha": cfg.kd_alpha,
                                   "kd_temperature": cfg.kd_temperature}
    run.write_summary(summary)
    return summary


def _bar(total: int, desc: str, on: bool):
    if not on:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0)

