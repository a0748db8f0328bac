"""Structured pruning of a trained FerNet into a smaller FerNet (issue 24): the start of a distilled student.

    python scripts/prune_fernet.py benchmarks/results/default/run_kd3b/model.safetensors \
        --model fernet_lite --out runs/prune/fernet_lite_from_kd3b.safetensors

Each stage of the target keeps the first ``depth`` convolutions of the same stage of the source; each kept
convolution keeps the output channels whose batch-norm scale |gamma| / sqrt(var + eps) is largest (the
channels that carry the most signal), and the next convolution and the head keep the matching input channels.
Where the target drops a convolution, its successor reads the kept channels of the one before: the start is
then a little off, which the distillation that follows repairs. Prints the source's and the target's MACs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ferlab.io import atomic_write  # noqa: E402
from ferlab.models import count_macs, create_model  # noqa: E402
from ferlab.models.weights import load_state_dict  # noqa: E402


def _stages(model: nn.Module) -> list[list[nn.Sequential]]:
    """The conv+BN+ReLU blocks of a FerNet, grouped by stage (a max-pool ends a stage)."""
    stages: list[list[nn.Sequential]] = [[]]
    for layer in model.features:
        if isinstance(layer, nn.MaxPool2d):
            stages.append([])
        else:
            stages[-1].append(layer)
    return stages


def _keep(block: nn.Sequential, k: int) -> torch.Tensor:
    bn = block[1]
    scale = bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps)
    return torch.sort(torch.argsort(scale, descending=True)[:k]).values


def prune(source: nn.Module, target: nn.Module) -> dict[str, torch.Tensor]:
    """Weights for ``target`` cut out of ``source`` (both FerNets with the same number of stages)."""
    src, dst = _stages(source), _stages(target)
    if len(src) != len(dst):
        raise SystemExit(f"the source has {len(src)} stages and the target {len(dst)}")
    inp = torch.arange(1)
    for s_stage, d_stage in zip(src, dst, strict=True):
        for s_block, d_block in zip(s_stage, d_stage, strict=False):
            out = _keep(s_block, d_block[0].out_channels)
            d_block[0].weight.data.copy_(s_block[0].weight.data[out][:, inp])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(d_block[1], name).data.copy_(getattr(s_block[1], name).data[out])
            inp = out
    target.head.weight.data.copy_(source.head.weight.data[:, inp])
    target.head.bias.data.copy_(source.head.bias.data)
    return target.state_dict()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("--source-model", default="fernet")
    ap.add_argument("--model", default="fernet_lite")
    ap.add_argument("--model-options", default="{}", help="the target's model_options as JSON, e.g. "
                    '\'{"widths": [16, 32, 64, 192], "depth": [1, 1, 1, 2]}\' (the recipe must say the same)')
    ap.add_argument("--size", type=int, default=44, help="input size for the MAC count")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    source = create_model(a.source_model, num_classes=7, in_chans=1)
    source.load_state_dict(load_state_dict(a.weights))
    target = create_model(a.model, num_classes=7, in_chans=1, **json.loads(a.model_options))
    with torch.no_grad():
        sd = prune(source.eval(), target.eval())
    from safetensors.torch import save_file

    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(a.out, lambda tmp: save_file({k: v.contiguous() for k, v in sd.items()}, tmp))
    macs = [count_macs(m, a.size) / 1e6 for m in (source, target)]
    print(f"{a.source_model} {macs[0]:.1f} M MACs -> {a.model} {macs[1]:.1f} M MACs: {a.out}")


if __name__ == "__main__":
    main()
