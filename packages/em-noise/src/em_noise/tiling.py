"""Tiled inference: split an image (or a stack) into overlapping tiles, predict tile by tile, blend.

A frame whose sides fit in ``tile_size`` is predicted whole, unpadded (exactly as whole-frame inference; an axis
shorter than a tile is also taken whole). Larger frames are cut into equal tiles of at most ``tile_size`` px that
overlap by at least ``overlap`` px, and neighbouring tiles are cross-faded: a pixel's value is the weighted mean of
the tiles holding it, each tile's weight falling from 1 to 0 over the middle half of the overlap (raised cosine) and
0 in its outer quarter. No seam is left, and each output pixel is at least ``overlap // 4`` px from the edge of every
tile that contributes to it, so an operator whose receptive-field radius is at most ``overlap // 4`` px gives the
whole-image result (up to float rounding).
With ``pad`` > 0 every frame is first extended by that many px of its own mirror image on each side (reflect) and
the result cropped back: a network's zero-padded convolutions and periodic FFTs then see image content at the
frame's edges rather than a border.
Memory: one batch of tiles at a time plus the output array.
"""
from __future__ import annotations

import math
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


def balanced_tile(length: int, tile: int, overlap: int) -> int:
    """Smallest tile edge (<= ``tile``) that covers ``length`` px with as few tiles as ``tile`` needs."""
    if length <= tile:
        return length
    n = math.ceil((length - overlap) / (tile - overlap))
    return min(tile, math.ceil((length + (n - 1) * overlap) / n))


def blend_weights(starts: list[int], tile: int, length: int, overlap: int) -> list[np.ndarray]:
    """Per-tile 1-D weights: 1 inside, a raised-cosine ramp over the middle half of each inner overlap, 0 in its
    outer quarter; edges at the image border keep weight 1."""
    margin, ramp = overlap // 4, max(1, overlap - 2 * (overlap // 4))
    pos = np.arange(tile, dtype=np.float64)
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip((pos - margin + 0.5) / ramp, 0.0, 1.0))
    weights = []
    for s in starts:
        w = np.ones(tile)
        if s > 0:
            w *= rise
        if s + tile < length:
            w *= rise[::-1]
        weights.append(w)
    return weights


def _check(tile_size: int, overlap: int, batch_size: int) -> None:
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size < MIN_TILE:
        raise EMInputError(None, f"tile size (--tile-size) must be an integer >= {MIN_TILE} px, got {tile_size!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or not 0 <= overlap < tile_size:
        raise EMInputError(None, f"tile overlap (--tile-overlap) must be an integer in [0, tile size {tile_size}) px, "
                                 f"got {overlap!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise EMInputError(None, f"tile batch size must be an integer >= 1, got {batch_size!r}")


def _axis(length: int, tile_size: int, overlap: int) -> tuple[int, list[int], list[np.ndarray], np.ndarray]:
    t = balanced_tile(length, tile_size, overlap)
    starts = tile_starts(length, t, overlap)
    weights = blend_weights(starts, t, length, overlap)
    total = np.zeros(length)
    for s, w in zip(starts, weights):
        total[s:s + t] += w
    return t, starts, weights, total


def predict_tiled(fn: Callable[[torch.Tensor], torch.Tensor], image: np.ndarray, tile_size: int = 512,
                  overlap: int = 64, batch_size: int = 1, progress: bool = False,
                  device: str | torch.device | None = None, pad: int = 0) -> np.ndarray:
    """Apply ``fn`` ((B, 1, h, w) float32 tensor -> (B, C, h, w)) to ``image`` (H, W) or (N, H, W) tile by tile.

    Tiles are at most ``tile_size``² px, overlapping by at least ``overlap`` px, sent to ``device`` (default CPU) in
    batches of ``batch_size``; ``fn`` runs under ``torch.no_grad()``. ``pad``: px of mirrored border added to each
    side of every frame before and cropped after (at most the frame's side − 1). Returns float32 of the input's
    shape for one output channel, else ``(C, *image.shape)``.
    """
    _check(tile_size, overlap, batch_size)
    if int(pad) < 0:
        raise EMInputError(None, f"pad must be >= 0 px, got {pad}")
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim not in (2, 3) or min(arr.shape[-2:]) < 1 or (arr.ndim == 3 and arr.shape[0] < 1):
        raise EMInputError(None, f"image must be 2-D (H, W) or 3-D (N, H, W) and non-empty, got shape {arr.shape}")
    stack = arr[None] if arr.ndim == 2 else arr
    py, px = (min(int(pad), n - 1) for n in stack.shape[1:])
    if py or px:
        stack = np.pad(stack, ((0, 0), (py, py), (px, px)), mode="reflect")
    n, h, w = stack.shape
    th, ys, wy, ty = _axis(h, int(tile_size), int(overlap))
    tw, xs, wx, tx = _axis(w, int(tile_size), int(overlap))
    jobs = [(k, i, j) for k in range(n) for i in range(len(ys)) for j in range(len(xs))]
    out: np.ndarray | None = None
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
                    raise EMInputError(None, f"out of memory with tile size {tile_size} px and batch size "
                                             f"{batch_size}; lower --tile-size (or the batch size)") from err
                raise
            if y.ndim != 4 or y.shape[0] != x.shape[0] or tuple(y.shape[2:]) != tuple(x.shape[2:]):
                raise ValueError(f"tile function returned shape {tuple(y.shape)} for input {tuple(x.shape)}")
            y = y.detach().to("cpu", torch.float32).numpy()
            if out is None:
                out = np.zeros((y.shape[1], n, h, w), dtype=np.float32)
            for m, (k, i, j) in enumerate(batch):
                if len(ys) == 1 and len(xs) == 1:
                    out[:, k] = y[m]
                else:
                    wt = (np.outer(wy[i], wx[j]) / np.outer(ty[ys[i]:ys[i] + th], tx[xs[j]:xs[j] + tw]))
                    out[:, k, ys[i]:ys[i] + th, xs[j]:xs[j] + tw] += y[m] * wt.astype(np.float32)
            bar.update(len(batch))
    finally:
        bar.close()
    if py or px:
        out = out[:, :, py:out.shape[2] - py, px:out.shape[3] - px]
    out = np.ascontiguousarray(out[:, 0] if arr.ndim == 2 else out)
    return out[0] if out.shape[0] == 1 else out
