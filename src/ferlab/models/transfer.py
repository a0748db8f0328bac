"""Transfer learning: load local ImageNet (or any) state dicts onto ferlab models, and freeze layers.

``load_pretrained`` reads a state dict from a local file (safetensors or a weights-only torch file; never
downloads), renames torchvision or timm keys to the model's own (the ImageNet-layout models already use
torchvision names), adapts the first conv to the model's input channels (RGB kernels summed into one grey
channel) and skips the classifier head when its shape differs (another number of classes).  Every other
tensor must match in name and shape, otherwise a ``FerlabError`` lists what does not.

``apply_freeze`` / ``unfreeze_top`` decide which parameters train.  Batch-norm layers in frozen parts
are frozen too and kept in eval mode (running statistics neither used from the batch nor updated),
even when the trainer calls ``model.train()``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import FerlabError
from .weights import load_state_dict

FREEZE_MODES = ("none", "backbone", "all_but_head_and_stem")
STEM_MODES = ("sum", "mean")

# ------------------------------------------------------------------------------------ model anatomy


def head_name(model: nn.Module) -> str:
    """Qualified name of the model's ``.head`` (``fc`` for resnet18, ``classifier.6`` for vgg19 ...)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise FerlabError(f"{type(model).__name__}: has no linear .head, cannot transfer or freeze it")
    for name, m in model.named_modules():
        if m is head:
            return name
    raise FerlabError(f"{type(model).__name__}: .head is not a submodule of the model")


def stem_modules(model: nn.Module) -> tuple[str, nn.Conv2d, nn.Module | None]:
    """The first conv (name, module) and the batch norm right after it, if any."""
    conv_name, conv, bn = "", None, None
    for name, m in model.named_modules():
        if conv is None:
            if isinstance(m, nn.Conv2d):
                conv_name, conv = name, m
        elif isinstance(m, nn.Conv2d | nn.Linear):
            break
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.num_features == conv.out_channels:
                bn = m
            break
    if conv is None:
        raise FerlabError(f"{type(model).__name__}: has no convolution")
    return conv_name, conv, bn


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def finetune_blocks(model: nn.Module) -> list[nn.Module]:
    """The trunk as an ordered list of blocks, input side first (the head excluded).

    Models say it themselves with ``finetune_blocks()`` (resnet18: stem, layer1-4; efficientnet: the
    ``features`` entries; vgg19: the five conv stages, then fc6+fc7).  Otherwise: the direct children in
    order, a flat ``nn.Sequential`` split at its max-pools, a container holding the head split into its
    other children."""
    if hasattr(model, "finetune_blocks"):
        return list(model.finetune_blocks())
    head = model.head
    blocks: list[nn.Module] = []
    for _, child in model.named_children():
        if child is head or not _has_params(child):
            continue
        holds_head = any(m is head for m in child.modules())
        if isinstance(child, nn.Sequential) and any(isinstance(c, nn.MaxPool2d) for c in child) and not holds_head:
            cur: list[nn.Module] = []
            for c in child:
                cur.append(c)
                if isinstance(c, nn.MaxPool2d):
                    blocks.append(nn.ModuleList(cur))
                    cur = []
            if cur and any(_has_params(c) for c in cur):
                blocks.append(nn.ModuleList(cur))
        elif holds_head:
            blocks += [c for c in child.children() if c is not head and _has_params(c)]
        else:
            blocks.append(child)
    return [b for b in blocks if _has_params(b)]


# ------------------------------------------------------------------------------------ key layouts


def _strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("module.", "_orig_mod.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


_TIMM_IR = {"conv_pw": "block.0.0", "bn1": "block.0.1", "conv_dw": "block.1.0", "bn2": "block.1.1",
            "se.conv_reduce": "block.2.fc1", "se.conv_expand": "block.2.fc2", "conv_pwl": "block.3.0",
            "bn3": "block.3.1"}
_TIMM_DS = {"conv_dw": "block.0.0", "bn1": "block.0.1", "se.conv_reduce": "block.1.fc1",
            "se.conv_expand": "block.1.fc2", "conv_pw": "block.2.0", "bn2": "block.2.1"}


def _timm_efficientnet(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm ``conv_stem/bn1/blocks.S.I.*/conv_head/bn2/classifier`` -> torchvision ``features.*``."""
    last = len(model.features) - 1 if isinstance(getattr(model, "features", None), nn.Sequential) else 8
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "blocks" and len(parts) >= 4:
            s, i, rest = int(parts[1]), parts[2], ".".join(parts[3:])
            inverted = f"blocks.{s}.{i}.conv_pwl.weight" in sd
            table = _TIMM_IR if inverted else _TIMM_DS
            for src, dst in table.items():
                if rest.startswith(src + "."):
                    k = f"features.{s + 1}.{i}.{dst}.{rest[len(src) + 1:]}"
                    break
        elif parts[0] == "conv_stem":
            k = "features.0.0." + ".".join(parts[1:])
        elif parts[0] == "bn1":
            k = "features.0.1." + ".".join(parts[1:])
        elif parts[0] == "conv_head":
            k = f"features.{last}.0." + ".".join(parts[1:])
        elif parts[0] == "bn2":
            k = f"features.{last}.1." + ".".join(parts[1:])
        elif parts[0] == "classifier" and len(parts) == 2:
            k = "classifier.1." + parts[1]
        out[k] = v
    return out


def _timm_vgg(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm ``pre_logits.fc1/fc2`` (convs) and ``head.fc`` -> torchvision ``classifier.0/3/6`` (linears)."""
    names = {"pre_logits.fc1": "classifier.0", "pre_logits.fc2": "classifier.3", "head.fc": "classifier.6"}
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        for src, dst in names.items():
            if k.startswith(src + "."):
                k = dst + k[len(src):]
                if v.ndim == 4:  # conv-as-linear: (out, in, kh, kw) -> (out, in * kh * kw)
                    v = v.reshape(v.shape[0], -1)
                break
        out[k] = v
    return out


# (layout, a key only that layout has, converter); timm resnets already use torchvision's names
_LAYOUTS: list[tuple[str, str, Callable]] = [
    ("timm efficientnet", "conv_stem.weight", _timm_efficientnet),
    ("timm vgg", "pre_logits.fc1.weight", _timm_vgg),
]


def to_model_layout(sd: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, torch.Tensor], str]:
    """Rename a foreign state dict to the model's names; returns (state dict, layout name)."""
    sd = _strip_prefix(dict(sd))
    own = model.state_dict()
    for name, marker, convert in _LAYOUTS:
        if marker in sd and marker not in own:
            return convert(sd, model), name
    return sd, "torchvision/ferlab" if any(k in own for k in sd) else "unknown"


# ------------------------------------------------------------------------------------ loading


def _adapt_stem(w: torch.Tensor, shape: torch.Size, stem: str) -> tuple[torch.Tensor, str]:
    """Make a first-conv kernel fit: RGB -> grey by summing (or averaging) the input channels, grey -> N
    channels by spreading; a larger ImageNet kernel (7x7) resampled to a smaller stem (3x3) keeping its sum."""
    notes = []
    if w.ndim != 4 or w.shape[0] != shape[0]:
        return w, ""
    if w.shape[1] != shape[1]:
        if shape[1] == 1:
            notes.append(f"{stem} of its {w.shape[1]} input channels")
            w = w.sum(1, keepdim=True) if stem == "sum" else w.mean(1, keepdim=True)
        elif w.shape[1] == 1:
            w = w.repeat(1, shape[1], 1, 1) / shape[1]
            notes.append(f"grey kernel spread over {shape[1]} channels")
        else:
            return w, ""
    if tuple(w.shape[2:]) != tuple(shape[2:]):
        kh, kw = w.shape[2:]
        rh, rw = _mass_resampler(kh, shape[2]), _mass_resampler(kw, shape[3])
        w = rh @ w.float() @ rw.t()
        notes.append(f"{kh}x{kw} kernel resampled to {shape[2]}x{shape[3]} (same sum)")
    return w, ", ".join(notes)


def _mass_resampler(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) matrix spreading each input cell over the output cells it overlaps (both spanning
    [0, 1]); columns sum to 1, so a resampled kernel keeps its sum (its response to a flat image)."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        lo, hi = i / n_out, (i + 1) / n_out
        for j in range(n_in):
            overlap = min(hi, (j + 1) / n_in) - max(lo, j / n_in)
            if overlap > 0:
                m[i, j] = overlap * n_in
    return m.float()


def _listing(items: list[str], limit: int = 8) -> str:
    more = f", ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def load_pretrained(model: nn.Module, path: str | Path, stem: str = "sum", strict: bool = True) -> dict:
    """Load a local state dict onto ``model`` in place; returns a report dict.

    ``stem``: how RGB first-conv kernels become one grey channel (``sum``: the same response to a grey
    image replicated to RGB, ``mean``).  The head is skipped when its shape differs.  Missing or
    mismatched tensors raise ``FerlabError``, and so do unused ones unless ``strict=False``."""
    if stem not in STEM_MODES:
        raise FerlabError(f"unknown stem adaptation {stem!r}; choose {' or '.join(STEM_MODES)}")
    path = Path(path)
    raw = load_state_dict(path)
    bad = [k for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise FerlabError(f"{path}: not a state dict of tensors (e.g. {bad[0]!r})")
    sd, layout = to_model_layout(raw, model)
    target = model.state_dict()
    hname = head_name(model)
    head_keys = {f"{hname}.weight", f"{hname}.bias"}
    stem_key = stem_modules(model)[0] + ".weight"

    new: dict[str, torch.Tensor] = {}
    mismatched, skipped_head, notes = [], [], []
    for k, t in target.items():
        if k not in sd:
            continue
        v = sd[k]
        if k == stem_key and v.shape != t.shape:
            v, note = _adapt_stem(v, t.shape, stem)
            if note:
                notes.append(f"{k}: {note}")
        if v.shape != t.shape:
            if k in head_keys:
                skipped_head.append(k)
            else:
                mismatched.append(f"{k} (file {tuple(sd[k].shape)}, model {tuple(t.shape)})")
            continue
        new[k] = v.to(t.dtype)
    missing = [k for k in target if k not in sd and k not in head_keys and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in target and not k.endswith("num_batches_tracked")]
    name = type(model).__name__
    if not new:
        raise FerlabError(f"{path}: no tensor fits model {name} (file layout: {layout}; file keys start "
                          f"{_listing(sorted(sd), 4)})")
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} mismatched: {_listing(mismatched)}")
    if missing:
        problems.append(f"{len(missing)} missing from the file: {_listing(missing)}")
    if unexpected and strict:
        problems.append(f"{len(unexpected)} unexpected in the file: {_listing(unexpected)}")
    if problems:
        raise FerlabError(f"{path} does not fit model {name} (file layout: {layout}): " + "; ".join(problems))
    model.load_state_dict(new, strict=False)
    return {"path": str(path), "layout": layout, "loaded": len(new), "skipped_head": skipped_head,
            "stem": notes, "unexpected": unexpected}


# ------------------------------------------------------------------------------------ freezing


def _keep_eval(module: nn.Module, args) -> None:
    """Forward pre-hook of a frozen batch norm: normalise with its running statistics, never update them."""
    module.training = False


def _bns(module: nn.Module):
    return (m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def _freeze_bn(bn: nn.Module) -> None:
    for p in bn.parameters():
        p.requires_grad_(False)
    if _keep_eval not in bn._forward_pre_hooks.values():
        bn.register_forward_pre_hook(_keep_eval)
    bn.eval()


def _release_bn(bn: nn.Module) -> None:
    for hid in [h for h, fn in bn._forward_pre_hooks.items() if fn is _keep_eval]:
        del bn._forward_pre_hooks[hid]


def _set_trainable(modules, flag: bool) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


def apply_freeze(model: nn.Module, mode: str) -> nn.Module:
    """``none``: all trainable; ``backbone``: only ``.head``; ``all_but_head_and_stem``: ``.head`` and
    the first conv (with the batch norm right after it).  Frozen batch norms stay in eval mode."""
    if mode not in FREEZE_MODES:
        raise FerlabError(f"unknown freeze mode {mode!r}; choose {', '.join(FREEZE_MODES)}")
    for bn in _bns(model):
        _release_bn(bn)
    if mode == "none":
        _set_trainable([model], True)
        return model
    trainable: list[nn.Module] = [model.head]
    head_name(model)  # checks the head is a submodule
    if mode == "all_but_head_and_stem":
        _, conv, bn = stem_modules(model)
        trainable += [conv] + ([bn] if bn is not None else [])
    _set_trainable([model], False)
    _set_trainable(trainable, True)
    keep = {id(m) for t in trainable for m in t.modules()}
    for bn in _bns(model):
        if id(bn) not in keep:
            _freeze_bn(bn)
    return model


def unfreeze_top(model: nn.Module, n: int, freeze_bn: bool = True) -> list[nn.Module]:
    """Make the top ``n`` blocks of :func:`finetune_blocks` trainable (resnet18: layer4, layer3, ...;
    efficientnet: ``features[-1]``, ``features[-2]``, ...; vgg19: fc6+fc7, then the conv stages), with the
    head.  On a fully trainable model everything else is frozen first; after ``apply_freeze`` the blocks
    are added to what it left trainable (``all_but_head_and_stem`` + top 2 = head, stem, top 2 blocks).
    With ``freeze_bn`` the batch norms inside the blocks stay frozen in eval mode (the usual recipe for
    fine-tuning on a small dataset).  Returns the unfrozen blocks."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise FerlabError(f"unfreeze_top: n must be a non-negative integer, not {n!r}")
    if all(p.requires_grad for p in model.parameters()):
        apply_freeze(model, "backbone")
    else:
        head_name(model)
        _set_trainable([model.head], True)
    blocks = finetune_blocks(model)
    top = blocks[len(blocks) - n:] if n else []
    _set_trainable(top, True)
    for b in top:
        for bn in _bns(b):
            if freeze_bn:
                _freeze_bn(bn)
            else:
                _release_bn(bn)
                _set_trainable([bn], True)
    return top


def trainable_names(model: nn.Module) -> list[str]:
    return [k for k, p in model.named_parameters() if p.requires_grad]
