"""Duplicates and blank images within and across splits (train/test leakage).

- Exact duplicates: pixel-identical images (a 128-bit hash of the raw uint8 pixel bytes).
- Near duplicates: a 64-bit perceptual hash (pHash: the 8x8 lowest-frequency DCT coefficients of the
  image compared with their median) and a Hamming-distance threshold; pairs that are pixel-identical are
  counted as exact, not near.  This catches re-encoded (JPEG) or slightly shifted copies.
- Blank images: a single grey level.

How counts are given (the convention of the FER2013 README): for splits A and B, ``rows_b`` is the number
of rows of B whose image also occurs in A (288 PrivateTest rows also appear in Training), ``rows_a`` the
same the other way round, and ``images`` the number of distinct images found in both (43 images in both
test splits).  Within one split, ``rows`` is the number of rows that repeat an earlier row's image (rows
minus distinct images) and ``groups`` the number of images that occur more than once.  For near
duplicates (which do not form clean groups) ``pairs`` is the number of near pairs, ``rows`` within a split the
number of rows with at least one near partner, and ``rows_a`` / ``rows_b`` the rows with a partner across.

Everything is vectorised numpy: the full FER2013 (35,887 images) takes a few seconds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from .dataset import FERDataset

DEFAULT_NEAR_THRESHOLD = 4  # bits out of 64
N_EXAMPLES = 5


@dataclass
class PairCount:
    """Duplicates between two splits A and B (see the module docstring)."""

    rows_a: int = 0
    rows_b: int = 0
    images: int = 0
    pairs: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)  # (id in A, id in B)


@dataclass
class GroupCount:
    """Duplicates inside one split."""

    rows: int = 0        # rows that repeat another row's image (rows - distinct images)
    groups: int = 0      # images that occur more than once
    pairs: int = 0       # unordered pairs of rows
    examples: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class LeakageReport:
    n: int
    splits: list[str]
    near_threshold: int
    exact_within: dict[str, GroupCount]
    exact_across: dict[tuple[str, str], PairCount]
    near_within: dict[str, GroupCount]
    near_across: dict[tuple[str, str], PairCount]
    blank: dict[str, int]
    blank_examples: list[str]

    @property
    def blank_total(self) -> int:
        return sum(self.blank.values())

    def summary_lines(self) -> list[str]:
        out = []
        for s in self.splits:
            e, nr = self.exact_within[s], self.near_within.get(s)
            line = f"within {s}: {e.rows} rows repeat another row's image ({e.groups} images occur more than once)"
            if nr is not None:
                line += f"; {nr.pairs} near-duplicate pairs (pHash distance <= {self.near_threshold})"
            out.append(line + _ex(e.examples))
        for (a, b), e in self.exact_across.items():
            line = (f"{a} x {b}: {e.rows_b} {b} rows also appear in {a}, {e.rows_a} {a} rows also appear in {b}, "
                    f"{e.images} distinct images in both")
            nr = self.near_across.get((a, b))
            if nr is not None:
                line += f"; near duplicates: {nr.rows_b} {b} rows, {nr.pairs} pairs"
            out.append(line + _ex(e.examples))
        out.append(f"blank images (one grey level): {self.blank_total} "
                   f"({', '.join(f'{s} {c}' for s, c in self.blank.items())})" + _ex(self.blank_examples))
        return out

    def to_dict(self) -> dict:
        def pc(p):
            return {k: (list(map(list, v)) if k == "examples" else v) for k, v in p.__dict__.items()}

        return {
            "n": self.n, "splits": self.splits, "near_threshold": self.near_threshold,
            "exact_within": {s: pc(v) for s, v in self.exact_within.items()},
            "exact_across": {f"{a}|{b}": pc(v) for (a, b), v in self.exact_across.items()},
            "near_within": {s: pc(v) for s, v in self.near_within.items()},
            "near_across": {f"{a}|{b}": pc(v) for (a, b), v in self.near_across.items()},
            "blank": self.blank, "blank_examples": self.blank_examples,
        }


def _ex(examples) -> str:
    if not examples:
        return ""
    shown = ", ".join(e if isinstance(e, str) else "=".join(e) for e in examples[:3])
    return f"  e.g. {shown}"


def exact_groups(images: np.ndarray) -> np.ndarray:
    """Group id per image: equal ids <=> pixel-identical images (a 128-bit BLAKE2b digest of the pixel
    bytes; a collision among even billions of images is practically impossible)."""
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    if len(flat) == 0:
        return np.zeros(0, dtype=np.int64)
    digests = b"".join(hashlib.blake2b(row.data, digest_size=16).digest() for row in flat)
    keys = np.frombuffer(digests, dtype=np.dtype((np.void, 16)))
    _, inv = np.unique(keys, return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


def blank_mask(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1)
    return flat.min(1) == flat.max(1)


def _dct_matrix(n: int, k: int) -> np.ndarray:
    """The first ``k`` rows of the orthonormal DCT-II matrix of size n."""
    i = np.arange(n)
    m = np.cos(np.pi * (2 * i[None, :] + 1) * np.arange(k)[:, None] / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m.astype(np.float32)


def phash(images: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """64-bit perceptual hashes (uint64) of uint8 images (N, H, W): the 8x8 lowest DCT frequencies of the
    image compared with their median (as imagehash's phash, with the DCT taken on the image itself)."""
    n, h, w = images.shape
    dh, dw = _dct_matrix(h, 8), _dct_matrix(w, 8)
    weights = (np.uint64(1) << np.arange(64, dtype=np.uint64))
    out = np.empty(n, dtype=np.uint64)
    for i in range(0, n, chunk):
        x = images[i:i + chunk].astype(np.float32)
        low = np.einsum("ah,nhw,bw->nab", dh, x, dw, optimize=True).reshape(len(x), 64)
        bits = low > np.median(low, axis=1, keepdims=True)
        out[i:i + chunk] = (bits.astype(np.uint64) * weights).sum(1, dtype=np.uint64)
    return out


def _pairs_brute(h: np.ndarray, threshold: int, chunk: int = 2048) -> np.ndarray:
    found = [np.zeros((0, 2), dtype=np.int64)]
    for i in range(0, len(h), chunk):
        d = np.bitwise_count(h[i:i + chunk, None] ^ h[None, i:])  # only j >= i
        a, b = np.nonzero(d <= threshold)
        keep = b > a
        found.append(np.stack([a[keep] + i, b[keep] + i], 1).astype(np.int64))
    return np.concatenate(found)


def near_pairs(hashes: np.ndarray, threshold: int = DEFAULT_NEAR_THRESHOLD, max_candidates: int = 20_000_000
               ) -> np.ndarray:
    """All pairs (i, j), i < j, whose 64-bit hashes differ in at most ``threshold`` bits: (P, 2) int64,
    sorted.

    Multi-index hashing: the 64 bits are cut into ``threshold + 1`` blocks; two hashes within the threshold
    agree exactly on at least one block (pigeonhole), so only pairs sharing a block value are compared.
    Falls back to comparing all pairs when the blocks are too unselective (more than ``max_candidates``).
    """
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    nblocks = threshold + 1
    if nblocks > 16:
        return _pairs_brute(h, threshold)
    edges = np.linspace(0, 64, nblocks + 1).round().astype(int)
    found = []
    total = 0
    for lo, hi in zip(edges[:-1], edges[1:]):
        key = (h >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(key, kind="stable")
        ks = key[order]
        run_start = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        run_len = np.diff(np.r_[run_start, n])
        run_end = np.repeat(run_start + run_len, run_len)  # exclusive end of each position's run
        partners = run_end - np.arange(n) - 1  # later positions in the same run
        m = int(partners.sum())
        total += m
        if total > max_candidates:
            return _pairs_brute(h, threshold)
        if m == 0:
            continue
        pos = np.repeat(np.arange(n), partners)
        step = np.arange(m) - np.repeat(np.cumsum(partners) - partners, partners) + 1
        a, b = order[pos], order[pos + step]
        ok = np.bitwise_count(h[a] ^ h[b]) <= threshold
        a, b = a[ok], b[ok]
        found.append(np.stack([np.minimum(a, b), np.maximum(a, b)], 1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(found).astype(np.int64)
    code = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack([code // n, code % n], 1)


def _within(group: np.ndarray, split_mask: np.ndarray, ids: np.ndarray) -> GroupCount:
    g = group[split_mask]
    if len(g) == 0:
        return GroupCount()
    counts = np.bincount(g)
    multi = counts[counts > 1]
    rows_idx = np.flatnonzero(split_mask)
    examples = []
    for gid in np.flatnonzero(counts > 1)[:N_EXAMPLES]:
        members = rows_idx[g == gid]
        examples.append((str(ids[members[0]]), str(ids[members[1]])))
    return GroupCount(rows=int(multi.sum() - len(multi)), groups=int(len(multi)),
                      pairs=int((multi * (multi - 1) // 2).sum()), examples=examples)


def _across(group: np.ndarray, ma: np.ndarray, mb: np.ndarray, ids: np.ndarray) -> PairCount:
    ng = int(group.max()) + 1 if len(group) else 0
    ca = np.bincount(group[ma], minlength=ng)
    cb = np.bincount(group[mb], minlength=ng)
    both = (ca > 0) & (cb > 0)
    examples = []
    for gid in np.flatnonzero(both)[:N_EXAMPLES]:
        ia = np.flatnonzero(ma & (group == gid))[0]
        ib = np.flatnonzero(mb & (group == gid))[0]
        examples.append((str(ids[ia]), str(ids[ib])))
    return PairCount(rows_a=int(ca[both].sum()), rows_b=int(cb[both].sum()), images=int(both.sum()),
                     pairs=int((ca[both] * cb[both]).sum()), examples=examples)


def _near_counts(pairs: np.ndarray, split_code: np.ndarray, names: list[str], ids: np.ndarray):
    within = {s: GroupCount() for s in names}
    across = {(a, b): PairCount() for a, b in combinations(names, 2)}
    if len(pairs) == 0:
        return within, across
    sa, sb = split_code[pairs[:, 0]], split_code[pairs[:, 1]]
    for k, s in enumerate(names):
        sel = pairs[(sa == k) & (sb == k)]
        within[s] = GroupCount(rows=len(np.unique(sel)), groups=0, pairs=len(sel),
                               examples=[(str(ids[i]), str(ids[j])) for i, j in sel[:N_EXAMPLES]])
    for ka, kb in combinations(range(len(names)), 2):
        sel = ((sa == ka) & (sb == kb)) | ((sa == kb) & (sb == ka))
        p = pairs[sel]
        if len(p) == 0:
            continue
        in_a = np.where(split_code[p[:, 0]] == ka, p[:, 0], p[:, 1])
        in_b = np.where(split_code[p[:, 0]] == kb, p[:, 0], p[:, 1])
        across[(names[ka], names[kb])] = PairCount(
            rows_a=len(np.unique(in_a)), rows_b=len(np.unique(in_b)), images=0, pairs=len(p),
            examples=[(str(ids[i]), str(ids[j])) for i, j in zip(in_a[:N_EXAMPLES], in_b[:N_EXAMPLES])])
    return within, across


def find_leakage(ds: FERDataset, near: bool = True, near_threshold: int = DEFAULT_NEAR_THRESHOLD) -> LeakageReport:
    """Exact and (optionally) near duplicates within and across the splits of ``ds``, and blank images."""
    names = ds.split_names()
    group = exact_groups(ds.images)
    masks = {s: ds.split == s for s in names}
    exact_within = {s: _within(group, masks[s], ds.ids) for s in names}
    exact_across = {(a, b): _across(group, masks[a], masks[b], ds.ids) for a, b in combinations(names, 2)}
    near_within: dict[str, GroupCount] = {}
    near_across: dict[tuple[str, str], PairCount] = {}
    if near and len(ds):
        pairs = near_pairs(phash(ds.images), near_threshold)
        if len(pairs):
            pairs = pairs[group[pairs[:, 0]] != group[pairs[:, 1]]]  # pixel-identical pairs are exact ones
        code = np.zeros(len(ds), dtype=np.int64)
        for k, s in enumerate(names):
            code[masks[s]] = k
        near_within, near_across = _near_counts(pairs, code, names, ds.ids)
    blank = blank_mask(ds.images)
    return LeakageReport(
        n=len(ds), splits=names, near_threshold=near_threshold, exact_within=exact_within,
        exact_across=exact_across, near_within=near_within, near_across=near_across,
        blank={s: int((blank & masks[s]).sum()) for s in names},
        blank_examples=[str(i) for i in ds.ids[blank][:N_EXAMPLES]],
    )


def duplicates_in(ds: FERDataset, reference_split: str = "Training", near_threshold: int | None = None) -> np.ndarray:
    """Boolean mask over ``ds``: rows outside ``reference_split`` whose image also occurs in it (exactly, or
    within ``near_threshold`` pHash bits when given).  ``~mask`` selects the test rows a model cannot have
    memorised, for an honest "accuracy without duplicates" figure."""
    ref = ds.split == reference_split
    group = exact_groups(ds.images)
    in_ref = np.zeros(int(group.max()) + 1 if len(group) else 0, dtype=bool)
    in_ref[group[ref]] = True
    mask = in_ref[group] & ~ref
    if near_threshold is not None and len(ds):
        pairs = near_pairs(phash(ds.images), near_threshold)
        a, b = pairs[:, 0], pairs[:, 1]
        mask[a[ref[b] & ~ref[a]]] = True
        mask[b[ref[a] & ~ref[b]]] = True
    return mask
