"""The trainer: in-memory uint8 data, batched augmentation, bf16 autocast, resumable runs.

A run directory holds:
  config.yaml        the resolved recipe
  metrics.csv        one row per epoch (loss, accuracy, learning rate, images/s, time)
  curves.png         accuracy and loss curves
  last.pt            full training state (weights-only torch format), written atomically every epoch
  best_acc.safetensors / best_loss.safetensors   best weights by validation accuracy / loss
  model.safetensors  the run's result (the best checkpoint by ``select_metric``)
  summary.json       best epoch, validation metrics, time, images/s
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from ..errors import FerlabError
from ..hardware import machine_info
from ..io import atomic_write, portable_path
from ..models import count_params, create_model
from .checkpoint import load_training_state, save_training_state, save_weights
from .config import TrainConfig
from .distill import kd_loss
from .losses import class_weights, mix_batch, multi_target_loss, soft_cross_entropy
from .schedule import Plateau, lr_at

NORM_MEAN, NORM_STD = 0.5, 0.25  # applied to x / 255; recorded on every model card


def normalize(x: torch.Tensor) -> torch.Tensor:
    """float grey levels [0, 255] -> network input."""
    return (x / 255.0 - NORM_MEAN) / NORM_STD


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


def resolve_amp(amp: str, device: str = "cpu") -> tuple[str, str]:
    """(precision to use, why) for a recipe's ``amp``: ``auto`` takes bf16 on CUDA or on a CPU with native
    bf16 (AVX512_BF16 or AMX), fp32 elsewhere: on an AVX2-only CPU bf16 autocast trains ~10x slower."""
    from ..hardware import cpu_features, has_native_bf16

    cuda = torch.device(device).type == "cuda"
    if amp == "auto":
        if cuda:
            return "bf16", "auto: CUDA device"
        if has_native_bf16():
            have = [f for f in ("avx512_bf16", "amx_bf16") if cpu_features()[f]]
            return "bf16", f"auto: the CPU has native bf16 ({', '.join(have)})"
        return "none", "auto: the CPU has no native bf16 (no avx512_bf16/amx), where bf16 autocast is ~10x slower"
    if amp == "bf16" and not cuda and not has_native_bf16():
        return "bf16", "requested; the CPU has no native bf16, so it is emulated (slow)"
    return amp, "requested"


def measure_amp_slowdown(model: torch.nn.Module, x: torch.Tensor, steps: int = 3) -> float:
    """Seconds per forward+backward step with bf16 autocast over fp32, on this batch (median of ``steps``)."""
    import statistics

    def step_time(enabled: bool) -> float:
        ts = []
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=enabled):
                out = model(x)
            out.float().sum().backward()
            ts.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
        return statistics.median(ts[1:])

    return step_time(True) / step_time(False)


def autocast(cfg: TrainConfig):
    if cfg.amp == "auto":
        cfg = TrainConfig(amp=resolve_amp(cfg.amp, cfg.device)[0], device=cfg.device)
    if cfg.amp == "bf16":
        return torch.autocast(device_type=torch.device(cfg.device).type, dtype=torch.bfloat16)
    if cfg.amp == "fp16" and cfg.device.startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return torch.autocast(device_type="cpu", enabled=False)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images_u8: np.ndarray | torch.Tensor, input_size: int = 44,
                   tta: str = "none", batch_size: int = 512, amp: str = "none", device: str = "cpu") -> np.ndarray:
    """Logits for uint8 images (N, H, W): centre crop to ``input_size``; ``tta`` = none | flip | tencrop
    (TTA averages softmax probabilities and returns their log)."""
    from ..data.augment import center_crop, ten_crop

    model.eval()
    x_all = torch.as_tensor(images_u8)
    out = []
    cfg = TrainConfig(amp=amp, device=device)
    for i in range(0, len(x_all), batch_size):
        x = x_all[i:i + batch_size].float()[:, None].to(device)
        if tta == "tencrop":
            views = ten_crop(x, input_size)
        elif tta == "flip":
            c = center_crop(x, input_size)
            views = torch.stack([c, c.flip(-1)])
        elif tta == "none":
            views = center_crop(x, input_size)[None]
        else:
            raise FerlabError(f"unknown test-time augmentation {tta!r} (none, flip, tencrop)")
        v, n = views.shape[0], views.shape[1]
        with autocast(cfg):
            logits = model(normalize(views.flatten(0, 1))).float()
        if v == 1:
            out.append(logits.cpu())
        else:
            p = F.softmax(logits, 1).view(v, n, -1).mean(0)
            out.append(p.clamp_min(1e-12).log().cpu())
    return torch.cat(out).numpy()


def _targets(ds, cfg: TrainConfig) -> torch.Tensor:
    """Per-sample training target: one-hot (hard labels) or the soft/multi-target array."""
    if ds.soft is not None and cfg.labels.split("-")[-1] in ("probability", "crossentropy", "multitarget"):
        return torch.as_tensor(ds.soft, dtype=torch.float32)
    return F.one_hot(torch.as_tensor(ds.labels), ds.num_classes).float()


def _split_train_val(ds, cfg: TrainConfig):
    if cfg.val_split == "PrivateTest" or cfg.train_split == "PrivateTest":
        raise FerlabError("PrivateTest is for the final report only: select models on PublicTest "
                          "or a validation split carved from Training (val_fraction)")
    train = ds.by_split(cfg.train_split)
    if cfg.val_fraction > 0:
        from ..data.splits import stratified_split

        parts = stratified_split(train.labels, {"train": 1 - cfg.val_fraction, "val": cfg.val_fraction},
                                 seed=cfg.seed)
        return train.subset(parts == "train"), train.subset(parts == "val")
    return train, ds.by_split(cfg.val_split)


def prepare_data(cfg: TrainConfig):
    from ..data import load_dataset

    ds = load_dataset(cfg.data, labels=cfg.labels, votes=cfg.model_options.get("_votes"))
    if cfg.classes:
        from ..data.splits import select_classes

        ds = select_classes(ds, cfg.classes)
    train, val = _split_train_val(ds, cfg)
    train = train.subset(train.labels >= 0) if train.soft is None else train
    if cfg.extra_data:
        from ..data.folders import load_folder, merge_training

        for folder in cfg.extra_data:
            train = merge_training(train, load_folder(folder, classes=train.classes))
    if cfg.balance != "none":
        from ..data.balance import balance_dataset

        train = balance_dataset(train, cfg.balance, counts=cfg.balance_counts, seed=cfg.seed)
    return train, val


def _write_curves(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(ep, [r["train_loss"] for r in rows], label="train")
    ax[0].plot(ep, [r["val_loss"] for r in rows], label="validation")
    ax[0].set_title("loss")
    ax[1].plot(ep, [r["train_acc"] for r in rows], label="train")
    ax[1].plot(ep, [r["val_acc"] for r in rows], label="validation")
    ax[1].set_title("accuracy")
    for a in ax:
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


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
            recipe = {**cfg.to_dict(), "amp": self.amp["requested"]}
            atomic_write(run / "config.yaml", lambda tmp: Path(tmp).write_text(yaml.safe_dump(recipe)))
        net = model
        if world > 1:
            net = torch.nn.parallel.DistributedDataParallel(model)
        weights = class_weights(train.labels, len(classes), cfg.class_weights)
        if weights is not None:
            weights = weights.to(cfg.device)
        x_train = torch.as_tensor(train.images)
        y_train = _targets(train, cfg)
        val_x = val.images
        val_y = val.labels
        from ..data.augment import Augmenter

        aug = Augmenter(cfg.augment, seed=cfg.seed + 1000 * rank)
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        plateau = Plateau(cfg.plateau_factor, cfg.plateau_patience)
        rows: list[dict] = []
        start_epoch, best = 0, {"val_acc": -1.0, "val_loss": float("inf"), "epoch_acc": -1, "epoch_loss": -1}
        elapsed = 0.0
        state_path = run / "last.pt"
        if resume and (run / "summary.json").exists() and not state_path.exists():
            raise FerlabError(f"{run}: run already finished")
        if resume:
            if not state_path.exists():
                raise FerlabError(f"{run}: nothing to resume (no last.pt)")
            st = load_training_state(state_path)
            model.load_state_dict(st["model"])
            if int(st["epoch"]) >= cfg.epochs:
                if self.log:
                    print(f"{run}: all {cfg.epochs} epochs already done", flush=True)
            opt.load_state_dict(st["optimizer"])
            start_epoch, best, elapsed = int(st["epoch"]), dict(st["best"]), float(st["elapsed"])
            aug.g.set_state(st["aug_rng"])
            gen.set_state(st["gen_rng"])
            torch.set_rng_state(st["torch_rng"])
            plateau = Plateau(cfg.plateau_factor, cfg.plateau_patience, dict(st["plateau"]))
            rows = _read_metrics(run / "metrics.csv")[:start_epoch]
        n = len(x_train)
        steps_per_epoch = n // cfg.batch_size if n >= cfg.batch_size else 1
        if cfg.max_train_batches:
            steps_per_epoch = min(steps_per_epoch, cfg.max_train_batches)
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.time()
            model.train()
            perm = self._epoch_order(train, gen, n)
            tot_loss, tot_correct, seen = 0.0, 0, 0
            bar = _bar(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", self.progress)
            if not main_proc:
                bar = None
            for step in range(steps_per_epoch):
                lr = lr_at(cfg, epoch + step / steps_per_epoch, plateau.scale)
                for gparam in opt.param_groups:
                    gparam["lr"] = lr * gparam.get("lr_scale", 1.0)
                idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size][rank::world]
                x = normalize(aug(x_train[idx])).to(cfg.device)
                y = y_train[idx].to(cfg.device)
                x, y_mix = mix_batch(x, y, gen, cfg.mixup, cfg.cutmix)
                with autocast(cfg):
                    logits = net(x)
                if cfg.labels.endswith("multitarget"):
                    loss = multi_target_loss(logits, y_mix)
                else:
                    loss = soft_cross_entropy(logits, y_mix, weights, cfg.label_smoothing)
                if teacher is not None:
                    loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * kd_loss(
                        logits, teacher[0][idx].to(cfg.device), cfg.kd_temperature, teacher[1][idx].to(cfg.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
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
            train_time = time.time() - t0
            # validation, logging and checkpoints happen on the main process; the others wait for its verdict
            verdict = torch.zeros(2)
            if main_proc:
                stop = self._end_epoch(model, opt, aug, gen, plateau, rows, best, epoch, lr,
                                       (tot_loss, tot_correct, seen, train_time, t0), elapsed, val_x, val_y)
                verdict[:] = torch.tensor([float(stop), plateau.scale])
            if world > 1:
                torch.distributed.broadcast(verdict, 0)
                plateau.scale = float(verdict[1])
            elapsed += time.time() - t0
            if verdict[0].item():
                break
        if world > 1:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
            if not main_proc:
                return {}
        return self._finish(model, rows, best, classes, train, val, elapsed)

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
        """Resolve ``amp`` for this hardware; warn once when bf16 is forced where it is emulated."""
        cfg = self.cfg
        used, why = resolve_amp(cfg.amp, cfg.device)
        info = {"requested": cfg.amp, "used": used, "reason": why}
        if used == "bf16" and "emulated" in why:
            x = normalize(torch.as_tensor(train.images[:cfg.batch_size]).float()[:, None])
            crop = cfg.input_size
            slow = measure_amp_slowdown(model, x[..., :crop, :crop])
            info["bf16_over_fp32_step_time"] = round(slow, 2)
            if main_proc:
                warnings.warn(f"amp=bf16 on a CPU without native bf16: one training step measured {slow:.1f}x "
                              "slower than fp32 here; amp=auto (the default) would choose fp32", stacklevel=2)
        if self.log and main_proc:
            print(f"precision: {'bf16' if used == 'bf16' else 'fp32'} ({why})", flush=True)
        return info

    def _end_epoch(self, model, opt, aug, gen, plateau, rows, best, epoch, lr, stats, elapsed, val_x, val_y) -> bool:
        """Validate, log and checkpoint one finished epoch; True when early stopping says stop."""
        cfg, run = self.cfg, self.run_dir
        tot_loss, tot_correct, seen, train_time, t0 = stats
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
        _write_metrics(rows, run / "metrics.csv")
        save_training_state({
            "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "best": best,
            "elapsed": elapsed, "aug_rng": aug.g.get_state(), "gen_rng": gen.get_state(),
            "torch_rng": torch.get_rng_state(), "plateau": plateau.state(),
        }, run / "last.pt")
        _write_curves(rows, run / "curves.png")
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
        cfg, run = self.cfg, self.run_dir
        key = "acc" if cfg.select_metric == "val_acc" else "loss"
        src = run / f"best_{key}.safetensors"
        if cfg.restore_best and src.exists():
            data = src.read_bytes()
            atomic_write(run / "model.safetensors", lambda tmp: Path(tmp).write_bytes(data))
        else:
            save_weights(model, run / "model.safetensors")
        ips = [r["images_per_s"] for r in rows]
        summary = {
            "model": cfg.model, "model_options": {k: v for k, v in cfg.model_options.items() if not k.startswith("_")},
            "classes": list(classes), "input_size": cfg.input_size, "labels": cfg.labels,
            "normalization": {"scale": 1 / 255, "mean": NORM_MEAN, "std": NORM_STD},
            "params": count_params(model), "epochs_run": len(rows), "epochs": cfg.epochs,
            "best_epoch_acc": best["epoch_acc"], "best_val_acc": best["val_acc"],
            "best_epoch_loss": best["epoch_loss"], "best_val_loss": best["val_loss"],
            "selected": f"best_{key}", "val_split": cfg.val_split if not cfg.val_fraction else
            f"{cfg.val_fraction:.0%} of {cfg.train_split}", "train_samples": len(train), "val_samples": len(val),
            "world_size": dist_world()[1], "seed": cfg.seed,
            "train_time_s": elapsed, "images_per_s_median": float(np.median(ips)) if ips else 0.0,
            "amp": getattr(self, "amp", {"requested": cfg.amp, "used": cfg.amp}), "machine": machine_info(),
        }
        if cfg.kd_alpha > 0:
            summary["distillation"] = {"teacher": portable_path(cfg.teacher), "kd_alpha": cfg.kd_alpha,
                                       "kd_temperature": cfg.kd_temperature}
        atomic_write(run / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
        return summary


def _bar(total: int, desc: str, on: bool):
    if not on:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0)


def _write_metrics(rows: list[dict], path: Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def _read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]


def _stale_epochs(rows: list[dict], metric: str) -> int:
    if not metric:
        return 0
    vals = [r[metric] for r in rows]
    best_i = int(np.argmax(vals) if metric == "val_acc" else np.argmin(vals))
    return len(vals) - 1 - best_i


def train(cfg: TrainConfig, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True,
          on_epoch_end=None) -> dict:
    """Train ``cfg`` into ``run_dir``.  With ``cfg.stages`` (e.g. two-stage fine-tuning: head only, then the
    top blocks at a lower rate) each stage runs in ``run_dir/stageN`` starting from the previous stage's
    weights, and the last stage's result becomes the run's result."""
    if cfg.cache_features and not cfg.stages:
        if cfg.freeze != "backbone":
            raise FerlabError("cache_features needs freeze: backbone (only the head trains on cached features)")
        from .headfit import fit_head_cached

        return fit_head_cached(cfg, run_dir, progress=progress)
    if not cfg.stages:
        return Trainer(cfg, run_dir, progress=progress, on_epoch_end=on_epoch_end).fit(resume=resume)
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    if not resume:
        atomic_write(run / "config.yaml", lambda tmp: Path(tmp).write_text(yaml.safe_dump(cfg.to_dict())))
    base = {k: v for k, v in cfg.to_dict().items() if k != "stages"}
    summary: dict = {}
    prev: Path | None = None
    total_s, total_epochs = 0.0, 0
    for i, overrides in enumerate(cfg.stages, start=1):
        stage_cfg = TrainConfig.from_dict({**base, **overrides, "stages": []})
        if prev is not None:
            stage_cfg.init = str(prev)
        stage_dir = run / f"stage{i}"
        if (stage_dir / "summary.json").exists():
            summary = json.loads((stage_dir / "summary.json").read_text())
        else:
            again = resume and (stage_dir / "last.pt").exists()
            summary = Trainer(stage_cfg, stage_dir, progress=progress, on_epoch_end=on_epoch_end).fit(resume=again)
        prev = stage_dir / "model.safetensors"
        total_s += summary.get("train_time_s", 0.0)
        total_epochs += summary.get("epochs_run", 0)
    data = prev.read_bytes()
    atomic_write(run / "model.safetensors", lambda tmp: Path(tmp).write_bytes(data))
    summary = {**summary, "stages": len(cfg.stages), "train_time_s": total_s, "epochs_run": total_epochs,
               "epochs": total_epochs}
    atomic_write(run / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    return summary


def resume(run_dir: str | os.PathLike, progress: bool = True) -> dict:
    from .config import load_config

    run = Path(run_dir)
    if not (run / "config.yaml").exists():
        raise FerlabError(f"{run}: not a run directory (no config.yaml)")
    return train(load_config(run / "config.yaml"), run, resume=True, progress=progress)
