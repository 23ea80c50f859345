"""Tiled inference: split an image (or a stack) into overlapping tiles, predict tile by tile, stitch.

Stitching crops every tile to the part it owns: neighbouring tiles meet at the middle of their overlap, so each
output pixel lies at least ``overlap // 2`` px from the edge of the tile that produced it.  For an operator whose
receptive-field radius is at most ``overlap // 2`` px the result equals whole-image application (up to float
rounding).  The last tile snaps to the image edge; an axis shorter than a tile is taken whole, unpadded (so an image
that fits one tile is predicted exactly as a whole).
Memory: one batch of tiles at a time plus the output array.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from em_noise.errors import EMInputError

MIN_TILE = 8


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets along one axis of ``length`` >= ``tile`` px; the last tile ends at the edge."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def _owned(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """[lo, hi) output range each tile owns: boundaries at the middle of each overlap."""
    bounds = [0] + [(starts[k - 1] + tile + starts[k]) // 2 for k in range(1, len(starts))] + [length]
    return [(bounds[k], bounds[k + 1]) for k in range(len(starts))]


def _check(tile_size: int, overlap: int, batch_size: int) -> None:
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size < MIN_TILE:
        raise EMInputError(None, f"tile size (--tile-size) must be an integer >= {MIN_TILE} px, got {tile_size!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or not 0 <= overlap < tile_size:
        raise EMInputError(None, f"tile overlap (--tile-overlap) must be an integer in [0, tile size {tile_size}) px, "
                                 f"got {overlap!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise EMInputError(None, f"tile batch size must be an integer >= 1, got {batch_size!r}")


def predict_tiled(fn: Callable[[torch.Tensor], torch.Tensor], image: np.ndarray, tile_size: int = 512,
                  overlap: int = 64, batch_size: int = 1, progress: bool = False,
                  device: str | torch.device | None = None) -> np.ndarray:
    """Apply ``fn`` ((B, 1, h, w) float32 tensor -> same shape) to ``image`` (H, W) or (N, H, W) tile by tile.

    Tiles are ``tile_size``² px overlapping by at least ``overlap`` px, sent to ``device`` (default CPU) in batches
    of ``batch_size``; ``fn`` runs under ``torch.no_grad()``.  Returns float32 of the input's shape.
    """
    _check(tile_size, overlap, batch_size)
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim not in (2, 3) or min(arr.shape[-2:]) < 1 or (arr.ndim == 3 and arr.shape[0] < 1):
        raise EMInputError(None, f"image must be 2-D (H, W) or 3-D (N, H, W) and non-empty, got shape {arr.shape}")
    stack = arr[None] if arr.ndim == 2 else arr
    n, h, w = stack.shape
    # An axis shorter than a tile is processed whole (no padding): a frame that fits one tile is predicted
    # exactly as whole-image inference, which matters for networks with a global (FFT) receptive field.
    th, tw = min(int(tile_size), h), min(int(tile_size), w)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    yo, xo = _owned(ys, th, h), _owned(xs, tw, w)
    jobs = [(k, i, j) for k in range(n) for i in range(len(ys)) for j in range(len(xs))]
    out = np.empty((n, h, w), dtype=np.float32)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    bar = tqdm(total=len(jobs), desc="tiles", unit="tile", disable=not progress, leave=False)
    try:
        for b0 in range(0, len(jobs), batch_size):
            batch = jobs[b0:b0 + batch_size]
            tiles = np.stack([stack[k, ys[i]:ys[i] + th, xs[j]:xs[j] + tw] for k, i, j in batch])
            x = torch.from_numpy(tiles[:, None]).to(dev)
            try:
                with torch.no_grad():
                    y = fn(x)
            except RuntimeError as err:
                if "out of memory" in str(err).lower():
                    raise EMInputError(None, f"out of memory with tile size {tile_size} px and batch size {batch_size}; "
                                             "lower --tile-size (or the batch size)") from err
                raise
            if tuple(y.shape) != tuple(x.shape):
                raise ValueError(f"tile function returned shape {tuple(y.shape)} for input {tuple(x.shape)}")
            y = y.detach().to("cpu", torch.float32).numpy()
            for m, (k, i, j) in enumerate(batch):
                (y0, y1), (x0, x1) = yo[i], xo[j]
                out[k, y0:y1, x0:x1] = y[m, 0, y0 - ys[i]:y1 - ys[i], x0 - xs[j]:x1 - xs[j]]
            bar.update(len(batch))
    finally:
        bar.close()
    return out[0] if arr.ndim == 2 else out
