"""Trained run -> ONNX file + model card (JSON).

The exported graph does its own preprocessing, so the preprocessing travels with the weights:
input (N, 1, 48, 48) float32 grey levels 0-255 -> centre crop to the training input size ->
(x / 255 - mean) / std -> network -> logits (or, with ``tta="flip"``, the log of the mean softmax
of the image and its mirror).  The card records classes, sizes, normalisation, face-crop margin,
the temperature fitted on the selection split, ECE before/after, parameters, MACs and the sha256.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..calibration import expected_calibration_error, fit_temperature, nll, softmax
from ..card import FACE_MARGIN, ModelCard
from ..errors import FerlabError
from ..hardware import machine_info
from ..inference.classifier import OnnxClassifier
from ..io import atomic_write, portable_path
from ..models import count_macs, count_params
from . import qdq
from .build import load_run, prepare_data
from .config import TrainConfig
from .forward import normalize, predict_logits
from .rundir import RunDir

OPSET = 17


class Preprocessed(torch.nn.Module):
    """Centre crop + normalisation (+ optional flip averaging) around a trained network."""

    def __init__(self, net: torch.nn.Module, crop: int, tta: str = "none", size: int = 48):
        super().__init__()
        self.net, self.crop, self.tta, self.size = net, crop, tta, size

    def forward(self, x):
        # the input size is fixed (the card's ``input_size``), so the crop is constant: a plain ``Slice`` in
        # the graph, not the run-time arithmetic on the input's shape (8 nodes fewer at every run)
        off = (self.size - self.crop) // 2
        if off > 0:
            x = x[:, :, off:off + self.crop, off:off + self.crop]
        x = normalize(x)  # the same formula as training (training.forward)
        if self.tta == "flip":
            p = (F.softmax(self.net(x), 1) + F.softmax(self.net(torch.flip(x, dims=[3])), 1)) / 2
            return torch.log(p.clamp_min(1e-12))
        return self.net(x)


def export_module(module: torch.nn.Module, path: str | os.PathLike, size: int = 48) -> None:
    """The one ``torch.onnx.export`` of ferlab: ``module`` takes float32 (N, 1, size, size) grey levels 0-255
    (input ``image``, dynamic batch) and returns ``logits``; written atomically."""
    dummy = torch.rand(2, 1, size, size) * 255

    def write(tmp: str) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), (dummy,), tmp, input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET,
                              dynamo=False)

    atomic_write(path, write)


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, crop: int, size: int = 48, tta: str = "none") -> None:
    """A trained network with its preprocessing (``Preprocessed``) as an ONNX file."""
    export_module(Preprocessed(model.eval(), crop, tta, size), path, size)


# int8 schemes: (activation type, weight type, reduce_range).  ONNX Runtime's uint8-activation x int8-weight
# kernels saturate on x86 CPUs without VNNI (AVX2 only: the 16-bit intermediate sums of vpmaddubsw overflow),
# which cost a fernet 4.4 points there; 7-bit weights (reduce_range) or uint8 weights avoid it.  The default
# is chosen by benchmarks/quant_schemes.py (see benchmarks/README.md); tests/test_quant_agreement.py fails on
# any CPU where an int8 export drifts from its fp32 source.
INT8_SCHEMES = {
    "u8s8": ("QUInt8", "QInt8", False),      # the old default: saturates without VNNI
    "u8s8-rr": ("QUInt8", "QInt8", True),    # 7-bit weights: no saturation, keeps the VNNI fast path
    "u8u8": ("QUInt8", "QUInt8", False),
    "s8s8": ("QInt8", "QInt8", False),
}
DEFAULT_INT8 = "u8s8-rr"


def calibration_faces(images: np.ndarray, n: int = 1024) -> np.ndarray:
    """The faces an int8 export calibrates on: ``n`` of ``images`` (the training split), drawn with seed 0, so
    every script that re-quantises a run sees the export's own calibration."""
    return images[np.random.default_rng(0).choice(len(images), size=min(n, len(images)), replace=False)]


def quantize_int8(src: Path, dst: Path, calib_images: np.ndarray, scheme: str = DEFAULT_INT8,
                  fp32_stem: bool = True) -> list[str]:
    """Static int8 quantisation (QDQ, per-channel) calibrated on ``calib_images`` (N, 48, 48) uint8.  The stem
    convolutions (``qdq.float_stems``) stay fp32, weights and input, and pool in float (``qdq.pool_before_relu``):
    faster on one thread for every bundled model, and closer to the fp32 network; ``fp32_stem=False`` quantises
    them too, as benchmarks/bench_export_passes.py measures it.  Returns the names of the stems left in fp32."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if scheme not in INT8_SCHEMES:
        raise FerlabError(f"unknown int8 scheme {scheme!r} ({', '.join(INT8_SCHEMES)})")
    act, weight, reduce_range = INT8_SCHEMES[scheme]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"image": calib_images[i:i + 64, None].astype(np.float32)}
                                 for i in range(0, len(calib_images), 64)])

        def get_next(self):
            return next(self.batches, None)

    pre = dst.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        stems = qdq.float_stems(onnx.load(str(pre))) if fp32_stem else []

        def write(tmp: str) -> None:
            quantize_static(str(pre), tmp, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=reduce_range, activation_type=getattr(QuantType, act),
                            weight_type=getattr(QuantType, weight), nodes_to_exclude=stems)
            model = onnx.load(tmp)
            if qdq.pool_before_relu(model, stems):
                onnx.save(model, tmp)

        atomic_write(dst, write)
        return stems
    finally:
        if pre.exists():
            pre.unlink()


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike, name: str | None = None, tta: str = "none",
               calibrate: bool = True, quantize: str = "none", margin: float = FACE_MARGIN,
               extra_card: dict | None = None, data: str | os.PathLike | None = None) -> dict:
    """Export a run to ``out`` (.onnx path or folder) with its card; returns the card.  ``data``: where the
    run's dataset is now (for calibration and int8), when its recipe's path does not lead there from here."""
    model, summary, cfg = load_run(run_dir)
    if data is not None:
        cfg = TrainConfig.from_dict({**cfg.to_dict(), "data": str(data)})
    out = Path(out)
    name = name or Path(run_dir).name
    onnx_path = out / f"{name}.onnx" if out.suffix != ".onnx" else out
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _export_and_card(model, summary, cfg, name, onnx_path, tta, calibrate, quantize, margin, extra_card)
    except BaseException:  # never an .onnx without its card (nor a card for another file): remove both
        for p in (onnx_path, onnx_path.with_suffix(".json")):
            p.unlink(missing_ok=True)
        raise


def _export_and_card(model, summary: dict, cfg: TrainConfig, name: str, onnx_path: Path, tta: str, calibrate: bool,
                     quantize: str, margin: float, extra_card: dict | None) -> dict:
    export_onnx(model, onnx_path, crop=cfg.input_size, tta=tta)
    val = None
    if calibrate or quantize != "none":
        train, val = prepare_data(TrainConfig.from_dict({**cfg.to_dict(), "balance": "none", "extra_data": []}))
    if quantize == "int8":
        calib = calibration_faces(train.images)
        fp32_pred = predict_logits(model, val.images, cfg.input_size, amp="none").argmax(1)
        stems = quantize_int8(onnx_path, onnx_path, calib)
    elif quantize != "none":
        raise FerlabError(f"unknown quantization {quantize!r} (none, int8)")
    card = ModelCard(
        name=name, classes=summary["classes"], crop_inside_graph=cfg.input_size,
        output="logits" if tta == "none" else "log of the mean softmax over the image and its mirror",
        face_margin=margin, tta=tta, quantization=quantize,
        architecture=cfg.model, model_options=summary.get("model_options", {}),
        params=count_params(model), macs=count_macs(model, cfg.input_size) * (2 if tta == "flip" else 1),
        training={
            "data": Path(cfg.data).name, "labels": cfg.labels, "train_split": cfg.train_split,
            "selection_split": summary.get("val_split", cfg.val_split), "epochs": summary.get("epochs_run"),
            "best_epoch": summary.get("selected_epoch", summary.get("best_epoch_acc")), "wall_clock_min": round(summary.get("train_time_s", 0) / 60, 1),
            "images_per_s": round(summary.get("images_per_s_median", 0)), "recipe": cfg.to_dict(),
            "external_data": bool(cfg.extra_data),
            "initialised_from": pretraining(cfg.init),
            **({"soup": summary["soup"]} if "soup" in summary else {}),
        },
        extra={"int8_scheme": DEFAULT_INT8 if quantize == "int8" else None,
               "int8_fp32_stem": stems if quantize == "int8" else None},
    ).to_dict()
    if val is not None and calibrate:
        calibrate_card(card, onnx_path, val.images, val.labels, summary.get("val_split", cfg.val_split))
    if quantize == "int8":
        card["int8_agreement"] = int8_agreement(card, onnx_path, fp32_pred, val.images, val.labels,
                                                summary.get("val_split", cfg.val_split))
    return finish_card(card, onnx_path, extra_card)


def int8_agreement(card: dict, onnx_path: Path, fp32_pred: np.ndarray, images: np.ndarray, labels: np.ndarray,
                   split: str) -> dict:
    """Top-1 agreement of the int8 graph with its fp32 source on ``split``, and where it was measured: int8
    kernels differ between CPUs (ONNX Runtime's u8s8 saturates without VNNI), so the CPU goes with it."""

    finish_card(dict(card), onnx_path)
    clf = OnnxClassifier(onnx_path, calibrated=False)
    pred = clf.logits(images).argmax(1)
    return {"split": split, "top1_agreement": round(float((pred == fp32_pred).mean()), 4),
            "fp32_accuracy": round(float((fp32_pred == labels).mean()), 4),
            "int8_accuracy": round(float((pred == labels).mean()), 4),
            "measured_on": machine_info(clf.threads)}


def pretraining(init: str | os.PathLike | None) -> dict | None:
    """Where a fine-tuned run's starting weights came from and which labels trained them (read from the run's
    config.yaml beside the weights), so that a card names every label source its model has seen."""
    if not init:
        return None
    labels = RunDir(Path(init).parent).read_config_dict().get("labels")
    return {"weights": portable_path(init), "labels": labels or "unknown (no config.yaml beside the weights)"}


def calibrate_card(card: dict, onnx_path: Path, images: np.ndarray, labels: np.ndarray, split: str) -> None:
    """Fit the card's temperature on ``split`` with the exported graph itself; record ECE/NLL before and after."""

    finish_card(dict(card), onnx_path)  # a sealed card, so the graph loads like any model
    logits = OnnxClassifier(onnx_path, calibrated=False).logits(images)
    t = fit_temperature(logits, labels)
    card["temperature"] = round(t, 4)
    card["calibration"] = {
        "split": split,
        "ece_before": round(expected_calibration_error(softmax(logits), labels), 4),
        "ece_after": round(expected_calibration_error(softmax(logits, t), labels), 4),
        "nll_before": round(nll(logits, labels), 4), "nll_after": round(nll(logits, labels, t), 4),
        "accuracy": round(float((logits.argmax(1) == labels).mean()), 4),
    }


def finish_card(card: dict, onnx_path: Path, extra_card: dict | None = None) -> dict:
    """Add the file facts (name, size, sha256) and write the card beside the ONNX file, atomically."""
    return ModelCard.from_dict(card).seal(onnx_path, extra_card)
