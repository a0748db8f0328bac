"""The one in-memory form every dataset loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError

SPLITS: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")


@dataclass
class FERDataset:
    """Images, labels and splits of one FER dataset.

    images: uint8 (N, 48, 48) grayscale.
    labels: int64 (N,) hard class ids into ``classes`` (-1 where a sample has no hard label).
    split:  (N,) str, e.g. "Training" / "PublicTest" / "PrivateTest".
    ids:    (N,) str, a stable id per sample (CSV row index or file path).
    soft:   optional float32 (N, C) per-class targets (FER+ vote distributions or
            multi-target indicators); None for hard-label datasets.
    """

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    ids: np.ndarray
    classes: tuple[str, ...]
    soft: np.ndarray | None = None
    source: str = ""
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 3:
            raise ValueError("images must be uint8 (N, H, W)")
        for name in ("labels", "split", "ids"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} images")
        if self.soft is not None and self.soft.shape != (n, len(self.classes)):
            raise ValueError(f"soft targets must be (N, {len(self.classes)})")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, mask_or_index) -> FERDataset:
        idx = np.asarray(mask_or_index)
        return FERDataset(
            images=self.images[idx], labels=self.labels[idx], split=self.split[idx], ids=self.ids[idx],
            classes=self.classes, soft=None if self.soft is None else self.soft[idx], source=self.source,
        )

    def by_split(self, name: str) -> FERDataset:
        mask = self.split == name
        if not mask.any():
            present = ", ".join(self.split_names()) or "none"
            raise DataError(f"{self.source or 'dataset'}: no samples in split {name!r} (splits: {present})")
        return self.subset(mask)

    def split_names(self) -> list[str]:
        names = list(dict.fromkeys(self.split.tolist()))
        order = {s: i for i, s in enumerate(SPLITS)}
        return sorted(names, key=lambda s: (order.get(s, len(order)), s))

    def class_counts(self) -> dict[str, dict[str, int]]:
        """{split: {class: count}} over samples with a hard label."""
        table: dict[str, dict[str, int]] = {}
        for s in self.split_names():
            lab = self.labels[(self.split == s) & (self.labels >= 0)]
            counts = np.bincount(lab, minlength=self.num_classes)
            table[s] = {c: int(counts[i]) for i, c in enumerate(self.classes)}
        return table
