"""A trained FerNet's weights as the start of the same network with RepVGG branches (issue 24, session 10).

    python scripts/rep_fernet.py benchmarks/results/lite/run_s9_fm/model.safetensors --model fernet_lite \
        --out runs/rep/fernet_lite_rep.safetensors

The 3x3 branch of each block takes the trained weights; the new 1x1 and identity branches start with a zero
batch-norm scale and shift, so the start computes exactly what the trained network computes (checked here on
random input) and training then grows the branches. A recipe trains it with ``model_options: {rep: true}`` and
``init:`` this file; export and evaluation fold the branches away (``FerNet.deploy``).
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
from ferlab.models import create_model  # noqa: E402
from ferlab.models.layers import RepConvBN  # noqa: E402
from ferlab.models.weights import load_state_dict  # noqa: E402


def rep_start(plain_state: dict, model: str, model_options: dict | None = None, num_classes: int = 7) -> nn.Module:
    """The RepVGG form of ``model`` carrying ``plain_state`` (a plain FerNet's state dict), new branches at zero."""
    opts = dict(model_options or {})
    rep = create_model(model, num_classes=num_classes, in_chans=1, rep=True, **opts)
    try:
        missing, unexpected = rep.load_state_dict(plain_state, strict=False)
    except RuntimeError as e:  # shapes differ
        raise SystemExit(f"rep_fernet: the weights do not fit {model}: {str(e).splitlines()[1].strip()}") from None
    extra = [k for k in missing if ".rep1." not in k and ".repid." not in k]
    if extra or unexpected:
        raise SystemExit(f"rep_fernet: the weights do not fit {model}: missing {extra[:4]}, unexpected {unexpected[:4]}")
    with torch.no_grad():
        for m in rep.modules():
            if isinstance(m, RepConvBN):
                for bn in (m.rep1[1], m.repid):
                    if bn is not None:
                        bn.weight.zero_()
                        bn.bias.zero_()
    return rep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", help="a plain FerNet's model.safetensors")
    ap.add_argument("--model", required=True, help="its architecture (fernet, fernet_lite, fernet_micro, ...)")
    ap.add_argument("--model-options", default="{}", help="its model_options as JSON (e.g. widths and depth)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    state = load_state_dict(a.weights)
    num_classes = int(state["head.weight"].shape[0])
    opts = json.loads(a.model_options)
    rep = rep_start(state, a.model, opts, num_classes).eval()
    plain = create_model(a.model, num_classes=num_classes, in_chans=1, **opts).eval()
    plain.load_state_dict(state)
    x = torch.randn(8, 1, 44, 44)
    with torch.no_grad():
        diff = float((rep(x) - plain(x)).abs().max())
    if diff > 1e-4:
        raise SystemExit(f"rep_fernet: the start differs from the trained network by {diff:.2g}")

    def write(tmp: str) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in rep.state_dict().items()}, tmp)

    atomic_write(a.out, write)
    print(f"{a.out}: {a.model} with RepVGG branches, start equal to {a.weights} (max difference {diff:.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
