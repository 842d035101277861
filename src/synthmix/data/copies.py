"""Near-copies: one picture resized, re-encoded, cropped, slightly rotated, re-toned, greyscaled or
mirrored, told apart from distinct pictures of the same class (which can look very alike: catalogue
shots on one background, scans of one digit).

Two steps, as imagededup and fastdup do:

1. **Search** (cheap, exact): every image's 64-number low-pass descriptor (its greyscale thumbnail
   averaged down to 8 x 8, zero mean, unit length) and its mirror's; each image's `NEIGHBOURS`
   nearest by cosine, found by blocked matrix products (a flat vector index: BLAS, not Python loops),
   down to `SEARCH_FLOOR`.
2. **Confirm**: the pair's best normalised correlation at the resolution of the smaller image
   (4, 8 or 16 pixels a side), over a grid of alignments (crops of up to 10% of each side, rotations
   up to 4.5 degrees, mirroring), either image warped onto the other. Brightness, contrast and colour
   drop out of the correlation.

A pair is a copy when its aligned correlation reaches `THRESHOLDS[resolution]`: set by
bench/bench_copies.py on planted copies and distinct same-class pairs of two real sets (see
bench/RESULTS.md). The resolution sets the bar because tiny images agree more by chance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

THUMB = 32  # the stored greyscale thumbnail's side
DESCRIPTOR = 8  # the search descriptor's side (64 numbers)
NEIGHBOURS = 8  # nearest images each image's search keeps
SEARCH_FLOOR = 0.5  # search cosines below this are never confirmed (no planted copy falls below ~0.6)
RESOLUTIONS = (4, 8, 16)  # comparison sides: the largest one the smaller image of a pair reaches
# Aligned correlation a pair must reach at each comparison side to count as a copy (bench_copies.py).
THRESHOLDS = {4: 0.9985, 8: 0.9985, 16: 0.99}


@dataclass(frozen=True)
class Fingerprints:
    """What the copy check keeps of each image: its greyscale thumbnail and its shorter side."""

    thumbs: np.ndarray  # (n, THUMB, THUMB) uint8
    sides: np.ndarray  # (n,) int: the decoded image's shorter side, in pixels

    def __len__(self) -> int:
        return len(self.sides)

    def take(self, indices: Sequence[int] | np.ndarray) -> Fingerprints:
        indices = np.asarray(indices, dtype=np.int64)
        return Fingerprints(self.thumbs[indices], self.sides[indices])

    @staticmethod
    def stack(prints: Sequence[tuple[np.ndarray, int]]) -> Fingerprints:
        if not prints:
            return Fingerprints(np.zeros((0, THUMB, THUMB), np.uint8), np.zeros(0, np.int64))
        return Fingerprints(np.stack([t for t, _ in prints]), np.array([s for _, s in prints], np.int64))


@dataclass(frozen=True)
class Pair:
    """A confirmed copy: query image `query` copies reference image `reference`."""

    query: int
    reference: int
    search: float  # the search descriptors' cosine (the better of plain and mirrored)
    aligned: float  # the best aligned correlation (what decides)


def fingerprint(img: Image.Image) -> tuple[np.ndarray, int]:
    """An image's greyscale thumbnail (area-averaged down, bilinear up: the slight blur of the latter
    scored JPEG and resized copies of 8 px scans higher, against distinct scans, than box filtering
    both ways) and its shorter side."""
    grey = img.convert("L")
    side = min(grey.size)
    shrink = side >= THUMB
    thumb = grey.resize((THUMB, THUMB), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
    return np.asarray(thumb, dtype=np.uint8).copy(), side


# --- step 1: the search -------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def _pool(thumbs: np.ndarray, side: int) -> np.ndarray:
    """(n, THUMB, THUMB) -> (n, side, side) block means (side divides THUMB)."""
    f = THUMB // side
    return thumbs.reshape(len(thumbs), side, f, side, f).mean(axis=(2, 4))


def descriptors(prints: Fingerprints) -> tuple[np.ndarray, np.ndarray]:
    """The plain and mirrored unit descriptors, (n, 64) float32 each."""
    small = _pool(prints.thumbs.astype(np.float32), DESCRIPTOR)
    plain = _unit(small.reshape(len(small), -1)).astype(np.float32)
    mirrored = _unit(small[:, :, ::-1].reshape(len(small), -1)).astype(np.float32)
    return plain, mirrored


def search(
    query: Fingerprints, reference: Fingerprints, same: bool = False, block: int = 1024
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs: each query image's `NEIGHBOURS` nearest reference images with cosine at least
    `SEARCH_FLOOR` (the better of plain and mirrored). `same`: query is reference, self-pairs skipped.
    Returns (query index, reference index, cosine) arrays."""
    if not len(query) or not len(reference):
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    q_plain, q_mirror = descriptors(query)
    r_plain, _ = descriptors(reference)
    k = min(NEIGHBOURS, len(reference) - (1 if same else 0))
    rows, cols, sims = [], [], []
    for start in range(0, len(query), block):
        stop = min(start + block, len(query))
        sim = np.maximum(q_plain[start:stop] @ r_plain.T, q_mirror[start:stop] @ r_plain.T)
        if same:
            sim[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        if k <= 0:
            continue
        nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        best = np.take_along_axis(sim, nearest, axis=1)
        keep = best >= SEARCH_FLOOR
        rows.append(np.broadcast_to(np.arange(start, stop)[:, None], nearest.shape)[keep])
        cols.append(nearest[keep])
        sims.append(best[keep])
    if not rows:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(sims).astype(np.float32)


# --- step 2: the confirming comparison ------------------------------------------------------------


def _alignments() -> np.ndarray:
    """Affine maps (output -> input, normalised coordinates) of one image onto another: crops keeping
    90% or 95% of either side at the corners, edges and centre, and small rotations."""
    maps = []
    for sx in (1.0, 0.95, 0.9):
        for sy in (1.0, 0.95, 0.9):
            for tx in sorted({-(1 - sx), 0.0, 1 - sx}):
                for ty in sorted({-(1 - sy), 0.0, 1 - sy}):
                    maps.append([[sx, 0.0, tx], [0.0, sy, ty]])
    for degrees in (-4.5, -3.0, -1.5, 1.5, 3.0, 4.5):
        c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        maps.append([[c, -s, 0.0], [s, c, 0.0]])
    return np.array(maps, dtype=np.float32)


ALIGNMENTS = _alignments()


def resolution(side_a: np.ndarray, side_b: np.ndarray) -> np.ndarray:
    """The comparison side of each pair: the largest of RESOLUTIONS the smaller image reaches."""
    smaller = np.minimum(side_a, side_b)
    out = np.full(smaller.shape, RESOLUTIONS[0], dtype=np.int64)
    for r in RESOLUTIONS[1:]:
        out[smaller >= r] = r
    return out


def aligned_correlation(
    a: Fingerprints, ia: np.ndarray, b: Fingerprints, ib: np.ndarray, chunk: int = 512
) -> np.ndarray:
    """For each pair (a[ia[p]], b[ib[p]]): the best normalised correlation at the pair's resolution
    over every alignment, either image warped onto the other, plain or mirrored."""
    ia, ib = np.asarray(ia, np.int64), np.asarray(ib, np.int64)
    out = np.zeros(len(ia), dtype=np.float32)
    if not len(ia):
        return out
    sides = resolution(a.sides[ia], b.sides[ib])
    maps = torch.from_numpy(ALIGNMENTS)
    with torch.no_grad():
        for r in np.unique(sides).tolist():
            where = np.nonzero(sides == r)[0]
            for start in range(0, len(where), chunk):
                pairs = where[start : start + chunk]
                x = torch.from_numpy(a.thumbs[ia[pairs]].astype(np.float32))
                y = torch.from_numpy(b.thumbs[ib[pairs]].astype(np.float32))
                best = torch.full((len(pairs),), -1.0)
                for mirror in (False, True):
                    ym = y.flip(-1) if mirror else y
                    for moving, fixed in ((x, ym), (ym, x)):
                        best = torch.maximum(best, _best_over_maps(moving, fixed, maps, int(r)))
                out[pairs] = best.numpy()
    return out


def _best_over_maps(moving: torch.Tensor, fixed: torch.Tensor, maps: torch.Tensor, side: int) -> torch.Tensor:
    """Max over alignments of the correlation of `moving` warped and sampled at side x side with `fixed`
    averaged to side x side: the best of `maps`, then refined by a few rounds of local search (each
    round tries every map entry a step up and down and keeps the best; the steps halve). Sampling a
    2*side source at the side grid averages 2 x 2 blocks, so the identity map gives the block mean."""
    n = len(moving)
    source = F.adaptive_avg_pool2d(moving[:, None], min(2 * side, THUMB))
    target = F.adaptive_avg_pool2d(fixed[:, None], side).view(n, 1, side * side)
    target = target - target.mean(-1, keepdim=True)
    score = _correlations(source, target, maps.expand(n, *maps.shape), side)
    best, pick = score.max(dim=1)
    current = maps[pick]  # (n, 2, 3)
    step = torch.tensor([[0.02, 0.02, 1.0 / side], [0.02, 0.02, 1.0 / side]])
    for _ in range(REFINE_ROUNDS):
        deltas = torch.zeros(12, 2, 3)
        for k, (i, j) in enumerate((i, j) for i in range(2) for j in range(3)):
            deltas[2 * k, i, j], deltas[2 * k + 1, i, j] = step[i, j], -step[i, j]
        tries = current[:, None] + deltas[None]
        score = _correlations(source, target, tries, side)
        top, pick = score.max(dim=1)
        better = top > best
        best = torch.where(better, top, best)
        current = torch.where(better[:, None, None], tries[torch.arange(n), pick], current)
        step = step / 2
    return best


REFINE_ROUNDS = 4


def _correlations(source: torch.Tensor, target: torch.Tensor, maps: torch.Tensor, side: int) -> torch.Tensor:
    """(n, m) correlations of source[i] warped by maps[i, j] with the centred target[i]."""
    n, m = maps.shape[:2]
    grid = F.affine_grid(maps.reshape(n * m, 2, 3), [n * m, 1, side, side], align_corners=False)
    warped = F.grid_sample(
        source.repeat_interleave(m, 0), grid, mode="bilinear", padding_mode="border", align_corners=False
    ).view(n, m, side * side)
    warped = warped - warped.mean(-1, keepdim=True)
    num = (warped * target).sum(-1)
    spread_w, spread_t = warped.norm(dim=-1), target.norm(dim=-1)
    den = spread_w * spread_t
    # A flat image (a blank page) correlates with nothing; two flat images are copies.
    both_flat = (spread_w < 1e-3) & (spread_t < 1e-3)
    return torch.where(den > 1e-6, num / den.clamp_min(1e-6), torch.where(both_flat, 1.0, 0.0))


def is_copy(aligned: np.ndarray, side_a: np.ndarray, side_b: np.ndarray) -> np.ndarray:
    bar = np.vectorize(THRESHOLDS.__getitem__, otypes=[np.float32])(resolution(side_a, side_b))
    return aligned >= bar


# --- both steps -----------------------------------------------------------------------------------


def find_copies(query: Fingerprints, reference: Fingerprints, same: bool = False) -> list[Pair]:
    """Every confirmed copy pair between query and reference images (`same`: within one set, each
    unordered pair once)."""
    rows, cols, sims = search(query, reference, same)
    if same:  # a pair found from both ends is confirmed once
        low, high = np.minimum(rows, cols), np.maximum(rows, cols)
        _, first = np.unique(low * max(len(reference), 1) + high, return_index=True)
        rows, cols = low[first], high[first]
        sims = _pair_cosines(query, rows, reference, cols)
    aligned = aligned_correlation(query, rows, reference, cols)
    copies = is_copy(aligned, query.sides[rows], reference.sides[cols])
    return [
        Pair(int(q), int(r), float(s), float(c))
        for q, r, s, c in zip(rows[copies], cols[copies], sims[copies], aligned[copies], strict=True)
    ]


def groups(prints: Fingerprints) -> list[int]:
    """Each image's group: images joined by confirmed copy pairs, transitively (a representative index)."""
    parent = list(range(len(prints)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for pair in find_copies(prints, prints, same=True):
        parent[root(pair.query)] = root(pair.reference)
    return [root(i) for i in range(len(prints))]


def _pair_cosines(a: Fingerprints, ia: np.ndarray, b: Fingerprints, ib: np.ndarray) -> np.ndarray:
    a_plain, a_mirror = descriptors(a.take(ia)) if len(ia) else (np.zeros((0, 64)), np.zeros((0, 64)))
    b_plain, _ = descriptors(b.take(ib)) if len(ib) else (np.zeros((0, 64)), None)
    return np.maximum((a_plain * b_plain).sum(1), (a_mirror * b_plain).sum(1)).astype(np.float32)


def scores(
    a: Fingerprints, ia: Sequence[int], b: Fingerprints, ib: Sequence[int]
) -> list[tuple[float, float]]:
    """(search cosine, aligned correlation) of given pairs, whether or not the search would find them."""
    ia_, ib_ = np.asarray(ia, np.int64), np.asarray(ib, np.int64)
    return list(
        zip(
            _pair_cosines(a, ia_, b, ib_).tolist(),
            aligned_correlation(a, ia_, b, ib_).tolist(),
            strict=True,
        )
    )
