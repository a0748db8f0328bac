"""The torch-side forward pass: the torch twin of the exported graph.

An exported graph (``training.export.Preprocessed``) takes float32 grey levels 0-255, centre-crops them to the
training input size, normalises them with the card's constants (``ferlab.card``) and runs the network; these
functions do the same on uint8 images in torch, for validation during training, ``ferlab evaluate`` on a run
directory, teachers for distillation and CNN features.  Test-time augmentation (``tta``): ``none`` (the centre
view), ``flip`` (mean softmax of the view and its mirror), ``tencrop`` (four corners, centre and mirrors); the
views are cut by ``ferlab.tta``, the same function the ONNX evaluation uses.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .. import hardware
from ..card import NORM_MEAN, NORM_STD
from ..errors import FerlabError
from ..tta import check_tta
from ..tta import views as tta_views

__all__ = ["NORM_MEAN", "NORM_STD", "autocast", "extract_features", "normalize", "predict_logits", "resolve_amp",
           "views"]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """float grey levels [0, 255] -> network input."""
    return (x / 255.0 - NORM_MEAN) / NORM_STD


# bf16-over-fp32 step-time ratios measured in this process, by (model class, input shape, with backward)
_BF16_RATIO: dict[tuple, float] = {}


def measure_bf16_ratio(model: torch.nn.Module, x: torch.Tensor, steps: int = 3, backward: bool = True) -> float:
    """Seconds per step with bf16 autocast over fp32 on this batch (median of ``steps`` after a warm-up): a
    training step (forward + backward) or, with ``backward=False``, an inference forward pass."""
    import statistics
    import time

    def step_time(enabled: bool) -> float:
        ts = []
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=enabled):
                if backward:
                    model(x).float().sum().backward()
                else:
                    with torch.no_grad():
                        model(x)
            ts.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
        return statistics.median(ts[1:])

    return step_time(True) / step_time(False)


def resolve_amp(amp: str, device: str = "cpu", model: torch.nn.Module | None = None,
                sample: torch.Tensor | None = None, backward: bool = True) -> dict:
    """The precision for a recipe's ``amp``, as ``{"requested", "used", "reason"[, "bf16_over_fp32_step_time"]}``.

    ``auto`` takes bf16 on CUDA or on a CPU with native bf16 (AVX512_BF16 or AMX), fp32 elsewhere (on an
    AVX2-only CPU bf16 autocast trains ~10x slower).  Native bf16 is not always faster either (a fernet
    training step measured 1.28x the fp32 time on an AVX512_BF16 Xeon), so given a ``model`` and a real input
    batch ``sample`` it also times both on this CPU (once per model class and shape in a process; ``backward``:
    a training step or an inference pass) and keeps fp32 unless bf16 is faster."""
    cuda = torch.device(device).type == "cuda"
    info = {"requested": amp}
    if amp == "auto" and cuda:
        used, why = "bf16", "auto: CUDA device"
    elif amp == "auto" and not hardware.has_native_bf16():
        used, why = "none", "auto: the CPU has no native bf16 (no avx512_bf16/amx), where bf16 autocast is ~10x slower"
    elif amp == "auto":
        have = [f for f in ("avx512_bf16", "amx_bf16") if hardware.cpu_features()[f]]
        used, why = "bf16", f"auto: the CPU has native bf16 ({', '.join(have) or 'reported'})"
        if model is not None and sample is not None:
            key = (type(model).__name__, tuple(sample.shape), backward)
            if key not in _BF16_RATIO:
                _BF16_RATIO[key] = measure_bf16_ratio(model, sample, backward=backward)
            ratio = info["bf16_over_fp32_step_time"] = round(_BF16_RATIO[key], 2)
            if ratio > 0.95:
                used, why = "none", (f"auto: the CPU has native bf16, but a bf16 step of this model took {ratio:.2f}x "
                                     "the fp32 time here")
            else:
                why = f"{why}; a bf16 step took {ratio:.2f}x the fp32 time"
    elif amp == "bf16" and not cuda and not hardware.has_native_bf16():
        used, why = "bf16", "requested; the CPU has no native bf16, so it is emulated (slow)"
    else:
        used, why = amp, "requested"
    return {**info, "used": used, "reason": why}


def autocast(cfg=None, *, amp: str | None = None, device: str | None = None):
    """The autocast context for a config's (or the given) ``amp`` and ``device``."""
    amp = amp if amp is not None else cfg.amp
    device = device if device is not None else cfg.device
    if amp == "auto":
        amp = resolve_amp(amp, device)["used"]
    if amp == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    if amp == "fp16" and device.startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return torch.autocast(device_type="cpu", enabled=False)


def views(images: np.ndarray | torch.Tensor, input_size: int, tta: str = "none", device: str = "cpu") -> torch.Tensor:
    """(V, N, 1, s, s) float views of images (N, H, W) for ``tta``, cut by ``ferlab.tta.views``."""
    return torch.from_numpy(tta_views(np.asarray(images), input_size, tta)).to(device).float()[:, :, None]


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images_u8: np.ndarray | torch.Tensor, input_size: int = 44,
                   tta: str = "none", batch_size: int = 512, amp: str = "none", device: str = "cpu") -> np.ndarray:
    """Logits for uint8 images (N, H, W): centre crop to ``input_size``; ``tta`` = none | flip | tencrop
    (TTA averages softmax probabilities and returns their log)."""
    model.eval()
    x_all = np.asarray(images_u8)
    check_tta(tta)
    if amp == "auto" and len(x_all):  # measured on this model and a real batch: bf16 only where it is faster
        amp = resolve_amp(amp, device, model, normalize(views(x_all[:batch_size], input_size, tta, device)
                                                        .flatten(0, 1)), backward=False)["used"]
    out = []
    for i in range(0, len(x_all), batch_size):
        v_all = views(x_all[i:i + batch_size], input_size, tta, device)
        v, n = v_all.shape[0], v_all.shape[1]
        with autocast(amp=amp, device=device):
            logits = model(normalize(v_all.flatten(0, 1))).float()
        if v == 1:
            out.append(logits.cpu())
        else:
            p = F.softmax(logits, 1).view(v, n, -1).mean(0)
            out.append(p.clamp_min(1e-12).log().cpu())
    return torch.cat(out).numpy()


def extract_features(model, images_u8: np.ndarray, input_size: int = 44, batch_size: int = 256) -> np.ndarray:
    """Penultimate-layer features (N, F) of uint8 images (N, H, W): centre crop, normalise, forward_features."""
    if not hasattr(model, "forward_features"):
        raise FerlabError(f"{type(model).__name__} has no forward_features: cannot take its features")
    model.eval()
    out = []
    x_all = np.asarray(images_u8)
    with torch.no_grad():
        for i in range(0, len(x_all), batch_size):
            x = views(x_all[i:i + batch_size], input_size)[0]
            out.append(model.forward_features(normalize(x)).float().reshape(len(x), -1).numpy())
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out).astype(np.float32)
