"""In-memory uint8 + batched augmentation vs a per-image PIL + DataLoader pipeline, same model and recipe.

    python benchmarks/bench_pipeline.py [--model fernet] [--steps 60] [--workers 0 2]

Both pipelines feed the same network (bf16 autocast, SGD) with random 44 px crops and horizontal flips of
FER2013 Training images; the PIL pipeline decodes each 48x48 PNG from bytes, crops and flips it with PIL,
converts it with numpy and collates in a torch DataLoader, as a per-image torchvision-style loader does.
Writes benchmarks/results/pipeline.json with the median images/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ferlab.data.augment import Augmenter  # noqa: E402
from ferlab.data.fer2013 import load_fer2013_csv  # noqa: E402
from ferlab.models import create_model  # noqa: E402
from ferlab.training.forward import normalize  # noqa: E402


class PngDataset(torch.utils.data.Dataset):
    """One PNG per image, decoded and augmented per item with PIL."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, crop: int = 44, seed: int = 0):
        self.pngs = []
        for im in images:
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, format="PNG")
            self.pngs.append(buf.getvalue())
        self.labels, self.crop = labels, crop
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.pngs)

    def __getitem__(self, i):
        img = Image.open(io.BytesIO(self.pngs[i])).convert("L")
        x0, y0 = self.rng.integers(0, 48 - self.crop + 1, size=2)
        img = img.crop((int(x0), int(y0), int(x0) + self.crop, int(y0) + self.crop))
        if self.rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32))[None]
        return normalize(x), int(self.labels[i])


def step_fn(model, opt):
    def step(x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def time_in_memory(model, opt, images, labels, steps, bs):
    x_all, y_all = torch.as_tensor(images), torch.as_tensor(labels)
    aug = Augmenter({"crop": 44, "flip": 0.5})
    step = step_fn(model, opt)
    perm = torch.randperm(len(x_all))
    t0 = time.perf_counter()
    for s in range(steps):
        idx = perm[s * bs:(s + 1) * bs]
        step(normalize(aug(x_all[idx])), y_all[idx])
    return steps * bs / (time.perf_counter() - t0)


def time_pil(model, opt, ds, steps, bs, workers):
    loader = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers, drop_last=True,
                                         persistent_workers=False)
    step = step_fn(model, opt)
    it = iter(loader)
    x, y = next(it)  # worker start-up is not counted
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x, y)
        x, y = next(it)
    return steps * bs / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/datasets/fer2013/fer2013.csv.gz"))
    ap.add_argument("--model", default="fernet")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/pipeline.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    ds = load_fer2013_csv(args.data).by_split("Training")
    n = min(len(ds), args.steps * args.batch_size * 2)
    images, labels = ds.images[:n], ds.labels[:n]
    pngs = PngDataset(images, labels)
    model = create_model(args.model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    time_in_memory(model, opt, images, labels, 5, args.batch_size)  # warm-up
    results: dict[str, list[float]] = {"in_memory_batched": []}
    for w in args.workers:
        results[f"pil_dataloader_workers{w}"] = []
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        results["in_memory_batched"].append(time_in_memory(model, opt, images, labels, args.steps, args.batch_size))
        for w in args.workers:
            results[f"pil_dataloader_workers{w}"].append(time_pil(model, opt, pngs, args.steps, args.batch_size, w))
    med = {k: statistics.median(v) for k, v in results.items()}
    best_pil = max(v for k, v in med.items() if k.startswith("pil"))
    out = {
        "command": "python benchmarks/bench_pipeline.py " + " ".join(sys.argv[1:]),
        "model": args.model, "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
        "images_per_s_median": {k: round(v, 1) for k, v in med.items()},
        "images_per_s_all": {k: [round(x, 1) for x in v] for k, v in results.items()},
        "ratio_in_memory_vs_best_pil": round(med["in_memory_batched"] / best_pil, 2),
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2))
    tmp.replace(args.out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
