"""Training precision on this CPU: images/s of a training step in fp32 and with bf16 autocast.

``amp: auto`` (every recipe's default) takes bf16 only where the CPU has native bf16 (AVX512_BF16 or AMX):
on an AVX2-only CPU bf16 autocast was measured ~10x slower than fp32.  This script measures both on the
machine it runs on, for fernet and fernet_fast (batch 64, 44 px crops, SGD step included), interleaving the
two precisions so machine noise hits both alike, and records what ``amp: auto`` chooses here.

    python benchmarks/bench_amp.py                 # writes benchmarks/results/amp.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ferlab.hardware import machine_info  # noqa: E402
from ferlab.io import atomic_write  # noqa: E402
from ferlab.models import create_model  # noqa: E402
from ferlab.training.forward import resolve_amp  # noqa: E402


def images_per_s(model, opt, x, y, bf16: bool, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * len(x) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["fernet", "fernet_fast"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "amp.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 44, 44), torch.randint(0, 7, (64,))
    auto = resolve_amp("auto")
    used, why = auto["used"], auto["reason"]
    result = {"command": "python benchmarks/bench_amp.py " + " ".join(sys.argv[1:]),
              "machine": machine_info(args.threads), "amp_auto_chooses": {"amp": used, "reason": why}, "models": {}}
    for name in args.models:
        model = create_model(name, num_classes=7, in_chans=1).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        images_per_s(model, opt, x, y, True, 2)  # warm-up both paths
        images_per_s(model, opt, x, y, False, 2)
        runs = {"fp32": [], "bf16": []}
        for _ in range(args.repeats):
            for key in runs:
                runs[key].append(images_per_s(model, opt, x, y, key == "bf16", args.steps))
        med = {k: round(statistics.median(v), 1) for k, v in runs.items()}
        result["models"][name] = {"images_per_s": med, "bf16_over_fp32": round(med["bf16"] / med["fp32"], 3)}
        print(name, result["models"][name], flush=True)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2) + "\n"))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
