"""The trainer: in-memory uint8 data, batched augmentation, bf16 autocast, resumable runs.

``Trainer(cfg, run_dir).fit()`` trains one recipe into one run directory (its files: ``training.rundir``);
the model and data come from ``training.build``, the forward pass (normalisation, precision, validation
logits) from ``training.forward``.  ``training.launch.train`` chooses between this loop, the cached-feature
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
from .checkpoint import load_training_state, save_training_state, save_weights
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
                 on_epoch_end=None):
        """``on_epoch_end(row) -> bool``: called with each epoch's metrics row; True stops the run."""
        self.cfg, self.run_dir, self.progress, self.log = cfg, Path(run_dir), progress, log
        self.on_epoch_end = on_epoch_end

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
            RunDir(run).write_config({**cfg.to_dict(), "amp": self.amp["requested"]})
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
        state_path = run / RunDir.STATE
        if (run / RunDir.SUMMARY).exists() and not state_path.exists():
            raise FerlabError(f"{run}: run already finished")
        if not state_path.exists():
            raise FerlabError(f"{run}: nothing to resume (no last.pt)")
        st = load_training_state(state_path)
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
        loop.rows = [dict(r) for r in st["rows"]] if st.get("rows") else RunDir(run).read_metrics()[:loop.start_epoch]

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
            x = normalize(loop.aug(loop.x_train[idx])).to(cfg.device)
            y = loop.y_train[idx].to(cfg.device)
            x, y_mix = mix_batch(x, y, loop.gen, cfg.mixup, cfg.cutmix)
            with autocast(cfg):
                logits = loop.net(x)
            if cfg.labels.endswith("multitarget"):
                loss = multi_target_loss(logits, y_mix)
            else:
                loss = soft_cross_entropy(logits, y_mix, loop.weights, cfg.label_smoothing)
            if loop.teacher is not None:
                teacher = loop.teacher
                loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * kd_loss(
                    logits, teacher[0][idx].to(cfg.device), cfg.kd_temperature, teacher[1][idx].to(cfg.device))
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
            raise FerlabError("kd_alpha > 0 needs teacher=FILE.npz (make one with `ferlab teacher RUN...`)")
        if cfg.mixup or cfg.cutmix:
            raise FerlabError("distillation (kd_alpha > 0) cannot be combined with mixup or cutmix")
        from .distill import load_teacher

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
        """Validate, log and checkpoint one finished epoch; True when early stopping says stop.  With ``ema``
        the weight average is what is validated and kept."""
        cfg, run = self.cfg, self.run_dir
        tot_loss, tot_correct, seen, train_time, t0 = stats
        model = loop.ema.module if loop.ema is not None else loop.model
        best, rows, plateau, elapsed, lr = loop.best, loop.rows, loop.plateau, loop.elapsed, loop.lr
        val_logits = predict_logits(model, val_x, cfg.input_size, amp=cfg.amp, device=cfg.device)
        val_loss = float(F.cross_entropy(torch.as_tensor(val_logits), torch.as_tensor(val_y)))
        val_acc = float((val_logits.argmax(1) == val_y).mean())
        if cfg.scheduler == "plateau":
            plateau.step(val_loss)
        elapsed += time.time() - t0
        row = {"epoch": epoch + 1, "train_loss": tot_loss / seen, "train_acc": tot_correct / seen,
               "val_loss": val_loss, "val_acc": val_acc, "lr": lr, "images_per_s": seen / train_time,
               "epoch_s": time.time() - t0, "elapsed_s": elapsed}
        rows.append(row)
        improved_acc = val_acc > best["val_acc"]
        if improved_acc:
            best.update(val_acc=val_acc, epoch_acc=epoch + 1)
            save_weights(model, run / "best_acc.safetensors", {"epoch": str(epoch + 1)})
        improved_loss = val_loss < best["val_loss"]
        if improved_loss:
            best.update(val_loss=val_loss, epoch_loss=epoch + 1)
            save_weights(model, run / "best_loss.safetensors", {"epoch": str(epoch + 1)})
        # the state first (with the rows): a run killed between the two files resumes from last.pt alone
        save_training_state({
            "model": loop.model.state_dict(), "optimizer": loop.opt.state_dict(), "epoch": epoch + 1, "best": best,
            "elapsed": elapsed, "aug_rng": loop.aug.g.get_state(), "gen_rng": loop.gen.get_state(),
            "torch_rng": torch.get_rng_state(), "plateau": plateau.state(), "rows": [dict(r) for r in rows],
            **({"ema": loop.ema.state_dict()} if loop.ema is not None else {}),
        }, run / "last.pt")
        RunDir(run).write_metrics(rows)
        RunDir(run).write_curves(rows)
        if self.log:
            print(f"epoch {epoch + 1}: train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f} | "
                  f"val loss {val_loss:.3f} acc {val_acc:.4f} | {row['images_per_s']:.0f} img/s", flush=True)
        if self.on_epoch_end is not None and self.on_epoch_end(row):
            return True
        if not cfg.early_stopping:
            return False
        if _stale_epochs(rows, cfg.early_stopping) >= cfg.patience:
            if self.log:
                print(f"early stopping after epoch {epoch + 1}: no {cfg.early_stopping} gain "
                      f"in {cfg.patience} epochs", flush=True)
            return True
        return False

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
    src = run / f"best_{key}.safetensors"
    restored = bool(cfg.restore_best and src.exists())
    if restored:
        run.copy_weights(src)
    else:
        save_weights(model, run / "model.safetensors")
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


def _stale_epochs(rows: list[dict], metric: str) -> int:
    if not metric:
        return 0
    vals = [r[metric] for r in rows]
    best_i = int(np.argmax(vals) if metric == "val_acc" else np.argmin(vals))
    return len(vals) - 1 - best_i
