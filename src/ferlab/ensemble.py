"""Soft-voting ensembles of trained models: run directories (torch) and/or ONNX models.

The ensemble's class probabilities are the weighted mean of its members' probabilities,
``p(x) = sum_i w_i softmax(z_i(x) / T_i)`` with the weights normalised to sum to 1, where ``z_i`` are member
i's logits and ``T_i`` its temperature: the model card's for an ONNX member (as ``ferlab evaluate`` scores
it), 1 for a torch run (which has no fitted temperature).  It is evaluated exactly like a single model
(``ferlab.evaluation`` metrics and report).

``export_ensemble`` writes ONE ONNX graph that holds every member: input (N, 1, 48, 48) float32 grey levels
0-255, each member's own centre crop and normalisation inside, output ``logits`` = log p(x), so the usual
classifier conventions hold (softmax(logits) gives back p(x); the card's temperature, fitted on the selection
split, then calibrates the ensemble as a whole).  When every member is a run the graph is exported from a torch
module wrapping the members' ``Preprocessed`` wrappers; with ONNX members the member graphs are joined with
the ``onnx`` library (runs are exported first).

Evaluating needs no torch when every member is an ONNX model; torch runs and exporting need ``[train]``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .card import FACE_MARGIN, ModelCard, normalization
from .data import load_dataset
from .errors import FerlabError
from .evaluation.evaluate import duplicate_mask, load_model, predict_probs
from .evaluation.metrics import _clean, evaluate_predictions
from .evaluation.report import write_report
from .inference.crop import FaceCropper
from .io import atomic_write, command_line, portable_path
from .labels import scoring_labels
from .training.rundir import RunDir

OPSET = 17


def normalize_weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    """Weights as a float array summing to 1 (equal weights when None)."""
    if weights is None or len(weights) == 0:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) != n:
        raise FerlabError(f"give one weight per member: {n} member(s), {len(w)} weight(s)")
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise FerlabError(f"ensemble weights must be non-negative numbers with a positive sum, got {list(weights)}")
    return w / w.sum()


def soft_vote(member_probs: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of member probabilities (each (N, C))."""
    if not member_probs:
        raise FerlabError("an ensemble needs at least one member")
    shapes = {np.shape(p) for p in member_probs}
    if len(shapes) != 1:
        raise FerlabError(f"members disagree on the output shape: {sorted(shapes)}")
    w = normalize_weights(weights, len(member_probs))
    return np.tensordot(w, np.stack([np.asarray(p, np.float64) for p in member_probs]), axes=1)


class SoftVotingEnsemble:
    """``SoftVotingEnsemble(["runs/a", "zoo.onnx"], weights=[2, 1]).predict_proba(faces_u8)``."""

    def __init__(self, members: Sequence[str | os.PathLike], weights: Sequence[float] | None = None):
        if not members:
            raise FerlabError("an ensemble needs at least one member (run directories or .onnx models)")
        self.sources = [str(m) for m in members]
        self.members = [load_model(m) for m in members]
        self.weights = normalize_weights(weights, len(self.members))
        first = self.members[0]
        for m in self.members[1:]:
            if [c.lower() for c in m.classes] != [c.lower() for c in first.classes]:
                raise FerlabError(f"ensemble members must predict the same classes in the same order: {first.name} has "
                                  f"{', '.join(first.classes)}, {m.name} has {', '.join(m.classes)}")
        self.classes = list(first.classes)
        self.names = _unique_names([m.name for m in self.members], self.sources)

    def member_probas(self, images: np.ndarray, progress: bool = False) -> list[np.ndarray]:
        return [predict_probs(m, np.asarray(images), "none", progress=progress) for m in self.members]

    def predict_proba(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        return soft_vote(self.member_probas(images, progress), self.weights)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """log p(x): what the exported graph outputs."""
        return np.log(np.clip(self.predict_proba(images), 1e-12, None))

    @property
    def trained_labels(self) -> str:
        return self.members[0].trained_labels or "fer2013"


def _unique_names(names: list[str], sources: list[str]) -> list[str]:
    """Member names; where two share a name (runs/a/run, runs/b/run) the parent folder is added, then a number."""
    out = [n if names.count(n) == 1 else f"{Path(src).resolve().parent.name}/{n}" for n, src in zip(names, sources)]
    seen: dict[str, int] = {}
    for i, n in enumerate(out):
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            out[i] = f"{n}#{seen[n]}"
    return out


def _load_split(data, split: str, labels: str, classes: list[str]):
    """(images, labels as ids into ``classes``, dataset) of ``split``; rows of other classes are dropped."""

    votes = None
    if labels.startswith("ferplus"):
        guess = Path(data).parent.parent / "ferplus" / "fer2013new.csv"
        votes = guess if guess.is_file() else None
    ds = load_dataset(data, labels=labels, votes=votes, cropper=FaceCropper())
    part = ds.by_split(split)
    idx = {c.lower(): i for i, c in enumerate(classes)}
    remap = np.array([idx.get(c.lower(), -1) for c in ds.classes] + [-1], dtype=np.int64)
    if (remap[:-1] < 0).all():
        raise FerlabError(f"the models predict {', '.join(classes)} but {data} has {', '.join(ds.classes)} "
                          "(wrong --labels?)")
    y = remap[np.where(part.labels >= 0, part.labels, len(ds.classes))]
    keep = y >= 0
    if not keep.any():
        raise FerlabError(f"{data}: no labelled {split} rows of the models' classes")
    return part.images[keep], y[keep], ds


def evaluate_ensemble(members: Sequence[str | os.PathLike], data: str | os.PathLike, split: str = "PublicTest",
                      weights: Sequence[float] | None = None, out: str | os.PathLike | None = None,
                      labels: str | None = None, bootstrap: int = 1000, progress: bool = True,
                      command: str | None = None) -> dict[str, Any]:
    """Evaluate the ensemble and each member on ``split``; with ``out`` write the ensemble's report
    (metrics.json, plots, report.html) and ``ensemble.json`` (members side by side).  Returns that summary."""

    t0 = time.time()
    ens = SoftVotingEnsemble(members, weights)
    labels = labels or scoring_labels(ens.trained_labels)
    images, y, ds = _load_split(data, split, labels, ens.classes)
    probs = ens.member_probas(images, progress=progress)
    p = soft_vote(probs, ens.weights)
    result = evaluate_predictions(y, p, ens.classes, bootstrap=bootstrap)
    clean = None
    if split != "Training" and "Training" in set(ds.split_names()):
        clean = ~duplicate_mask(images, ds.by_split("Training").images)
        if clean.any():
            result.clean_n = int(clean.sum())
            result.clean_accuracy = float((p.argmax(1)[clean] == y[clean]).mean())
    rows = []
    for name, src, m, w, pm in zip(ens.names, ens.sources, ens.members, ens.weights, probs):
        r = evaluate_predictions(y, pm, ens.classes, bootstrap=0)
        rows.append({"name": name, "source": portable_path(src), "kind": m.kind, "weight": round(float(w), 6),
                     "temperature": round(float(m.temperature), 4), "accuracy": r.accuracy,
                     "balanced_accuracy": r.balanced_accuracy, "macro_f1": r.macro["f1"],
                     "clean_accuracy": float((pm.argmax(1)[clean] == y[clean]).mean())
                     if clean is not None and clean.any() else None,
                     "recall": {c: float(v) for c, v in zip(ens.classes, r.recall)}})
    best = max(rows, key=lambda r: r["accuracy"])
    cmd = command or _command(members, data, split, weights, out)
    summary = {
        "split": split, "data": portable_path(data), "labels": labels, "n": int(len(y)), "classes": ens.classes,
        "members": rows, "weights": [round(float(w), 6) for w in ens.weights],
        "ensemble": {"accuracy": result.accuracy, "accuracy_ci95": result.accuracy_ci,
                     "balanced_accuracy": result.balanced_accuracy, "macro_f1": result.macro["f1"],
                     "clean_accuracy": result.clean_accuracy, "ece": result.ece, "nll": result.nll,
                     "recall": {c: float(v) for c, v in zip(ens.classes, result.recall)}},
        "best_member": {"name": best["name"], "accuracy": best["accuracy"],
                        "note": f"the member with the highest accuracy on {split} itself"},
        "gain_over_best_member": result.accuracy - best["accuracy"],
        "command": cmd, "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    result.meta = {"model": f"soft-voting ensemble of {len(rows)}", "model_kind": "ensemble",
                   "members": ", ".join(f"{r['name']} (w={r['weight']:.3g})" for r in rows),
                   "data": portable_path(data), "labels": labels, "split": split, "tta": "none", "n": result.n,
                   "command": cmd, "date": summary["date"]}
    if out:
        out = Path(out)
        result.meta["seconds"] = round(time.time() - t0, 1)
        write_report(out, result, images, y, p, ens.classes,
                     f"Soft-voting ensemble ({len(rows)} models) on {Path(str(data)).name} / {split}", result.meta)
        summary["report"] = str(out / "report.html")
        atomic_write(out / "ensemble.json", lambda tmp: Path(tmp).write_text(json.dumps(_json_safe(summary), indent=2)))
    summary["result"] = result
    return summary


def _json_safe(x):
    return _clean({k: v for k, v in x.items() if k != "result"})


def _common(values: list[str]) -> str:
    """The members' shared value of a card field, or "mixed (a, b)"."""
    kinds = sorted(set(values))
    return kinds[0] if len(kinds) == 1 else f"mixed ({', '.join(kinds)})"


def _command(members, data, split, weights, out, export=None) -> str:
    parts = ["ensemble", *members, "--data", data, "--split", split]
    if weights:
        parts += ["--weights", *map(str, weights)]
    if export:
        parts += ["--export", str(export)]
    if out:
        parts += ["--out", str(out)]
    return command_line(parts)


# --------------------------------------------------------------------------------------------- export


def _torch_module(ens: SoftVotingEnsemble):
    """A torch module averaging the members' softmax (members: runs), output log-probabilities."""
    import torch
    import torch.nn.functional as F

    from .training.export import Preprocessed

    class SoftVote(torch.nn.Module):
        def __init__(self, nets, weights, temps):
            super().__init__()
            self.members = torch.nn.ModuleList(nets)
            self.register_buffer("w", torch.tensor(weights, dtype=torch.float32))
            self.temps = [float(t) for t in temps]

        def forward(self, x):
            p = None
            for i, m in enumerate(self.members):
                z = m(x)
                if self.temps[i] != 1.0:
                    z = z / self.temps[i]
                q = F.softmax(z, 1) * self.w[i]
                p = q if p is None else p + q
            return torch.log(p.clamp_min(1e-12))

    nets = [Preprocessed(m.handle.eval(), m.input_size).eval() for m in ens.members]
    return SoftVote(nets, ens.weights.tolist(), [m.temperature for m in ens.members]).eval()


def _export_torch(ens: SoftVotingEnsemble, path: Path) -> None:
    from .training.export import export_module

    export_module(_torch_module(ens), path)


def _same_opset(models: list) -> tuple[int, list]:
    """(opset, models converted to it): the highest default-domain opset among the members (at least OPSET)."""
    from onnx import version_converter

    def default_opset(m) -> int:
        return max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=OPSET)

    target = max([OPSET] + [default_opset(m) for m in models])
    return target, [m if default_opset(m) == target else version_converter.convert_version(m, target) for m in models]


def merge_onnx(paths: Sequence[str | os.PathLike], weights: Sequence[float], temperatures: Sequence[float],
               out: str | os.PathLike) -> None:
    """Join ONNX classifiers (input (N, 1, 48, 48) -> logits) into one graph: shared input ``image``, output
    ``logits`` = log(sum_i w_i softmax(logits_i / T_i)).  One function on purpose: the graph's node, initialiser
    and opset lists are assembled in one pass over the members."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper


    target, models = _same_opset([onnx.load(str(p)) for p in paths])
    w = normalize_weights(weights, len(models))
    nodes, inits, vinfo, funcs = [], [], [], []
    opsets: dict[str, int] = {"": target}
    n_classes = None
    weighted = []
    for i, m in enumerate(models):
        m = onnx.compose.add_prefix(m, f"m{i}/")
        g = m.graph
        init_names = {t.name for t in g.initializer}
        inputs = [v for v in g.input if v.name not in init_names]
        if len(inputs) != 1 or len(g.output) < 1:
            raise FerlabError(f"{paths[i]}: expected one image input and a logits output")
        src = inputs[0].name
        for node in g.node:
            for k, name in enumerate(node.input):
                if name == src:
                    node.input[k] = "image"
        nodes.extend(g.node)
        inits.extend(g.initializer)
        vinfo.extend(g.value_info)
        funcs.extend(m.functions)
        for o in m.opset_import:
            if o.domain not in ("", "ai.onnx"):
                opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
        dims = g.output[0].type.tensor_type.shape.dim
        if len(dims) == 2 and dims[1].dim_value:
            if n_classes is not None and dims[1].dim_value != n_classes:
                raise FerlabError("ensemble members disagree on the number of classes")
            n_classes = dims[1].dim_value
        z = g.output[0].name
        if float(temperatures[i]) != 1.0:
            inits.append(numpy_helper.from_array(np.asarray(temperatures[i], np.float32), f"ens/t{i}"))
            nodes.append(helper.make_node("Div", [z, f"ens/t{i}"], [f"ens/z{i}"]))
            z = f"ens/z{i}"
        nodes.append(helper.make_node("Softmax", [z], [f"ens/p{i}"], axis=1))
        inits.append(numpy_helper.from_array(np.asarray(w[i], np.float32), f"ens/w{i}"))
        nodes.append(helper.make_node("Mul", [f"ens/p{i}", f"ens/w{i}"], [f"ens/wp{i}"]))
        weighted.append(f"ens/wp{i}")
    nodes.append(helper.make_node("Sum", weighted, ["ens/p"]))
    inits.append(numpy_helper.from_array(np.asarray(1e-12, np.float32), "ens/eps"))
    nodes.append(helper.make_node("Max", ["ens/p", "ens/eps"], ["ens/pc"]))
    nodes.append(helper.make_node("Log", ["ens/pc"], ["logits"]))
    graph = helper.make_graph(
        nodes, "ferlab_soft_voting_ensemble",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 48, 48])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_classes])],
        initializer=inits, value_info=vinfo)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              functions=funcs, producer_name="ferlab-ensemble")
    model.ir_version = max(m.ir_version for m in models)
    onnx.checker.check_model(model)
    atomic_write(out, lambda tmp: onnx.save(model, tmp))


def _export_graph(ens: SoftVotingEnsemble, onnx_path: Path) -> str:
    """Write the ensemble's one ONNX graph; returns how it was built."""
    from .training.export import export_onnx

    if all(m.kind == "run" for m in ens.members):
        _export_torch(ens, onnx_path)
        return "torch module wrapping the members' Preprocessed wrappers"
    with tempfile.TemporaryDirectory(prefix="ferlab-ens-") as tmp:
        paths = []
        for i, m in enumerate(ens.members):
            if m.kind == "run":
                p = Path(tmp) / f"member{i}.onnx"
                export_onnx(m.handle, p, crop=m.input_size)
                paths.append(p)
            else:
                paths.append(m.path)
        merge_onnx(paths, ens.weights, [m.temperature for m in ens.members], onnx_path)
    return "member ONNX graphs joined with onnx"


def _member_entry(name: str, src, m, w: float) -> dict[str, Any]:
    """A member's entry on the ensemble's card: its source, weight, temperature, size and training."""

    entry: dict[str, Any] = {"name": name, "source": portable_path(src), "kind": m.kind, "weight": round(float(w), 6),
                             "temperature": round(float(m.temperature), 4),
                             "architecture": m.info.get("architecture")}
    if m.kind == "run":
        from .models import count_macs, count_params
        from .training.export import pretraining

        entry["params"] = count_params(m.handle)
        entry["macs"] = count_macs(m.handle, m.input_size)
        entry["crop"] = m.input_size
        cfg = RunDir(m.path).read_config_dict()
        entry["training"] = {"data": Path(cfg.get("data", "")).name, "labels": cfg.get("labels"),
                             "train_split": cfg.get("train_split"), "val_split": cfg.get("val_split"),
                             "balance": cfg.get("balance"), "class_weights": cfg.get("class_weights"),
                             "initialised_from": pretraining(cfg.get("init"))}
    else:
        card = m.card or {}
        entry["params"] = card.get("params")
        entry["macs"] = card.get("macs")
        entry["crop"] = card.get("crop_inside_graph", card.get("input_size"))
        entry["sha256"] = card.get("sha256")
        entry["training"] = card.get("training")
    return entry


def export_ensemble(members: Sequence[str | os.PathLike], out: str | os.PathLike,
                    weights: Sequence[float] | None = None, name: str | None = None, calibrate: bool = True,
                    data: str | os.PathLike | None = None, val_split: str = "PublicTest",
                    labels: str | None = None, margin: float | None = None,
                    extra_card: dict | None = None) -> dict:
    """Export the ensemble as one ONNX graph (``out``: .onnx path or folder) with its model card; returns
    the card.  ``calibrate`` fits the ensemble's temperature on ``val_split`` of ``data`` (default: the
    first run member's training data); never on PrivateTest."""
    from .training.export import calibrate_card

    if val_split == "PrivateTest":
        raise FerlabError("PrivateTest is for the final report only: fit the ensemble's temperature on "
                          "PublicTest (or another selection split)")
    ens = SoftVotingEnsemble(members, weights)
    out = Path(out)
    name = name or "ensemble"
    onnx_path = out / f"{name}.onnx" if out.suffix != ".onnx" else out
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    how = _export_graph(ens, onnx_path)
    member_cards = [_member_entry(*args) for args in zip(ens.names, ens.sources, ens.members, ens.weights)]
    if data is None:
        runs_data = (RunDir(m.path).read_config_dict().get("data") for m in ens.members if m.kind == "run")
        data = next((d for d in runs_data if d), None)
    margins = [((m.card or {}).get("face_margin")) for m in ens.members if m.kind == "onnx"]
    card = ModelCard(
        name=name, classes=ens.classes,
        input="float32 (N, 1, 48, 48) grey levels 0-255; each member's centre crop and normalisation happen "
              "inside the graph",
        crop_inside_graph=max(int(e["crop"] or 48) for e in member_cards),
        normalization=normalization(note="per member, as recorded on each member"),
        output=f"log of the weighted mean softmax of {len(member_cards)} members (soft voting)",
        face_margin=margin if margin is not None else (margins[0] if margins and margins[0] is not None
                                                       else FACE_MARGIN),
        quantization=_common([((m.card or {}).get("quantization") or "none") if m.kind == "onnx" else "none"
                              for m in ens.members]),
        architecture="ensemble(" + " + ".join(str(e["architecture"]) for e in member_cards) + ")",
        params=sum(int(e["params"] or 0) for e in member_cards), macs=sum(int(e["macs"] or 0) for e in member_cards),
        ensemble={"method": "soft voting", "built_by": how, "members": member_cards,
                  "weights": [round(float(w), 6) for w in ens.weights]},
        training={"data": Path(str(data)).name if data else None, "labels": ens.trained_labels,
                  "selection_split": val_split, "members": len(member_cards),
                  "initialised_from": [(e.get("training") or {}).get("initialised_from") for e in member_cards]},
    )
    if calibrate:
        if data is None:
            raise FerlabError("to fit the ensemble's temperature give --data (no run member names its data)")
        images, y, _ = _load_split(data, val_split, labels or scoring_labels(ens.trained_labels), ens.classes)
        fitted = card.to_dict()
        calibrate_card(fitted, onnx_path, images, y, val_split)
        card.update({k: fitted[k] for k in ("temperature", "calibration")})
    return card.seal(onnx_path, extra_card)
