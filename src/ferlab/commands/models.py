"""ferlab models [--json] [--size S]: the registered architectures (parameters, MACs) and bundled models."""

from __future__ import annotations

import json
from functools import cache

from ._options import int_in


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the architectures (parameters, MACs) and the bundled trained models",
                       description="List every registered architecture with its parameter count and multiply-"
                                   "accumulates per 48x48 image (7 classes, default options), and the bundled "
                                   "trained models.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--size", type=int_in(8, 1024), default=48, help="input side for the MAC count (default 48)")
    p.add_argument("--classes", type=int_in(2, 1000), default=7, help="number of classes of the head (default 7)")
    p.set_defaults(func=run)


NO_TORCH = "listed with the training extra (pip install 'ferlab[train]'): this install has no torch"


@cache
def architecture_stats(name: str, size: int = 48, num_classes: int = 7) -> tuple[int, int]:
    """(parameters, MACs) of a registered model with default options.  Built on the meta device (no
    memory, no initialisation: instant even for vgg19), falling back to a real build."""
    import torch

    from ..models import count_macs, count_params, create_model

    try:
        with torch.device("meta"):
            model = create_model(name, num_classes=num_classes)
            return count_params(model), count_macs(model, size)
    except NotImplementedError:  # an operation without a meta kernel
        model = create_model(name, num_classes=num_classes)
        return count_params(model), count_macs(model, size)


def architectures(size: int = 48, num_classes: int = 7) -> list[dict]:
    from ..models import list_models, model_entry

    rows = []
    for name in list_models():
        entry = model_entry(name)
        params, macs = architecture_stats(name, size, num_classes)
        rows.append({"name": name, "family": entry.family, "params": params, "macs": macs,
                     "input_size": size, "description": entry.description})
    return rows


def bundled() -> list[dict]:
    """Cards of the bundled models, or [] when the zoo module is not there (yet)."""
    try:
        from ..zoo import list_bundled

        return list(list_bundled())
    except (ImportError, AttributeError):
        return []


def _accuracy(card: dict):
    """Test accuracy recorded by `ferlab evaluate --record-card` (PrivateTest, no TTA), if any."""
    entry = (card.get("metrics") or {}).get("PrivateTest_none") or {}
    acc = entry.get("accuracy")
    return float(acc) if isinstance(acc, int | float) else None


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _millions(n) -> str:
    return f"{n / 1e6:.2f} M" if isinstance(n, int | float) else "-"


def run(args) -> int:
    from ..errors import FerlabError

    if args.size < 16:
        raise FerlabError(f"--size {args.size}: the architectures need an input of at least 16x16")
    try:
        archs = architectures(args.size, args.classes)
    except ModuleNotFoundError as e:  # the base install has no torch: the bundled models are still listed
        if (e.name or "").split(".")[0] != "torch":
            raise
        archs = None
    zoo = bundled()
    if args.json:
        print(json.dumps({"architectures": archs or [], "bundled": zoo, **({} if archs is not None else {
            "architectures_note": NO_TORCH})}, indent=2, default=str))
        return 0
    if archs is None:
        print(f"Architectures: {NO_TORCH}\n")
    else:
        print(f"Architectures ({len(archs)}; parameters and multiply-accumulates per {args.size}x{args.size} "
              f"image, {args.classes} classes, default options; `ferlab train model=NAME`):\n")
        print(_table(["name", "family", "params", "MACs", "description"],
                     [[a["name"], a["family"], _millions(a["params"]), _millions(a["macs"]), a["description"]]
                      for a in archs], right={2, 3}))
        print()
    if not zoo:
        print("Bundled models: none")
        return 0
    rows = []
    for card in zoo:
        acc = _accuracy(card)
        rows.append([str(card.get("name", "?")), str(card.get("architecture", "-")),
                     str(len(card.get("classes", [])) or "-"), _millions(card.get("params")),
                     _millions(card.get("macs")), f"{acc:.2%}" if acc is not None else "-"])
    print(f"Bundled models ({len(zoo)}; `ferlab predict --model NAME`):\n")
    print(_table(["name", "architecture", "classes", "params", "MACs", "PrivateTest acc"], rows, right={2, 3, 4, 5}))
    return 0
