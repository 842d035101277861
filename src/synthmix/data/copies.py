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
# Pairs below GATE at half the comparison side (unrefined) are not compared at full side: no planted
# copy in the bench scores below it there.
GATE = 0.95
REFINE_ROUNDS = 5  # local-search rounds after the grid of alignments


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
    size = DESCRIPTOR * DESCRIPTOR  # explicit, so that no images give (0, 64)
    plain = _unit(small.reshape(len(small), size)).astype(np.float32)
    mirrored = _unit(small[:, :, ::-1].reshape(len(small), size)).astype(np.float32)
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
    q_plain, q_mirror = (torch.from_numpy(d) for d in descriptors(query))
    r_plain = torch.from_numpy(descriptors(reference)[0])
    k = min(NEIGHBOURS, len(reference) - (1 if same else 0))
    empty = np.zeros(0, np.int64)
    if k <= 0:
        return empty, empty, np.zeros(0, np.float32)
    rows, cols, sims = [], [], []
    with torch.no_grad():
        for start in range(0, len(query), block):
            stop = min(start + block, len(query))
            sim = torch.maximum(q_plain[start:stop] @ r_plain.T, q_mirror[start:stop] @ r_plain.T)
            if same:
                sim[torch.arange(stop - start), torch.arange(start, stop)] = -float("inf")
            best, nearest = sim.topk(k, dim=1)
            keep = best >= SEARCH_FLOOR
            rows.append(torch.arange(start, stop)[:, None].expand_as(nearest)[keep].numpy())
            cols.append(nearest[keep].numpy())
            sims.append(best[keep].numpy())
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
    over every alignment, either image warped onto the other, plain or mirrored. A pair below GATE at
    half that resolution keeps its half-resolution score (far below any threshold)."""
    ia, ib = np.asarray(ia, np.int64), np.asarray(ib, np.int64)
    out = np.zeros(len(ia), dtype=np.float32)
    if not len(ia):
        return out
    sides = resolution(a.sides[ia], b.sides[ib])
    maps = torch.from_numpy(ALIGNMENTS)
    with torch.no_grad():
        for r in map(int, np.unique(sides)):
            where = np.nonzero(sides == r)[0]
            for start in range(0, len(where), chunk):
                pairs = where[start : start + chunk]
                x = torch.from_numpy(a.thumbs[ia[pairs]].astype(np.float32))
                y = torch.from_numpy(b.thumbs[ib[pairs]].astype(np.float32))
                # Half the side first, unrefined: pairs far from a copy there stop (their score is that).
                if r > RESOLUTIONS[0]:
                    rough = _best_alignment(
                        _smoothed(x, r // 2), _smoothed(y, r // 2), maps, r // 2, rounds=0
                    )
                    out[pairs] = rough.numpy()
                    go_on = torch.nonzero(rough >= GATE).flatten()
                else:
                    go_on = torch.arange(len(pairs))
                if len(go_on):
                    fine = _best_alignment(_smoothed(x[go_on], r), _smoothed(y[go_on], r), maps, r)
                    out[pairs[go_on.numpy()]] = fine.numpy()
    return out


_BINOMIAL = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16


def _smoothed(thumbs: torch.Tensor, side: int) -> torch.Tensor:
    """(n, THUMB, THUMB) -> (n, 1, 2 side, 2 side) block means, smoothed by a 3 x 3 binomial kernel: what
    either image of a pair is sampled from, so a warped sample and a plain one see the same filter."""
    source = F.adaptive_avg_pool2d(thumbs[:, None], 2 * side)
    return F.conv2d(F.pad(source, (1, 1, 1, 1), mode="replicate"), _BINOMIAL[None, None])


def _best_alignment(
    x: torch.Tensor, y: torch.Tensor, maps: torch.Tensor, side: int, rounds: int = REFINE_ROUNDS
) -> torch.Tensor:
    """Max over alignments of the correlation of one image warped (sampled at side x side) with the
    other (2 x 2 block means at side x side): four ways (x onto y, y onto x, each with y mirrored) times
    `maps`; then the best way and map of each pair refined by a few rounds of local search (each round
    tries every map entry a step up and down and keeps the best; the steps halve)."""
    n = len(x)
    y_mirror = y.flip(-1)
    moving = torch.cat([x, y, x, y_mirror])
    fixed = torch.cat([y, x, y_mirror, x])
    target = F.avg_pool2d(fixed, 2).view(4 * n, 1, side * side)
    target = target - target.mean(-1, keepdim=True)
    score = _correlations(moving, target, maps.expand(4 * n, *maps.shape), side).view(4, n, -1)
    best_map, pick_map = score.max(dim=2)  # (4, n)
    best, way = best_map.max(dim=0)  # (n,)
    rows = way * n + torch.arange(n)
    source, target = moving[rows], target[rows]
    current = maps[pick_map[way, torch.arange(n)]]  # (n, 2, 3)
    step = torch.tensor([[0.04, 0.04, 2.0 / side], [0.04, 0.04, 2.0 / side]])
    for _ in range(rounds):
        deltas = torch.zeros(12, 2, 3)
        for k, (i, j) in enumerate((i, j) for i in range(2) for j in range(3)):
            deltas[2 * k, i, j], deltas[2 * k + 1, i, j] = step[i, j], -step[i, j]
        tries = current[:, None] + deltas[None]
        top, pick = _correlations(source, target, tries, side).max(dim=1)
        better = top > best
        best = torch.where(better, top, best)
        current = torch.where(better[:, None, None], tries[torch.arange(n), pick], current)
        step = step / 2
    return best


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
        rows, cols, sims = low[first], high[first], sims[first]  # the cosine is the same either way
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
    a_plain, a_mirror = descriptors(a.take(ia))
    b_plain, _ = descriptors(b.take(ib))
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
