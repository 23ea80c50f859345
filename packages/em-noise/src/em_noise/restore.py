"""Apply a restoration network to EM files: read, scale, tiled prediction, map back, write.

Intensity scaling (the same for every network of the toolkit): each frame is mapped affinely so that its
0.1 and 99.9 intensity percentiles become 0 and 1 (the range the networks were trained on, see
:mod:`em_noise.scaling`); the prediction is mapped back with the inverse map, so the output is in the input's
units (counts stay counts, 8-bit stays on 0–255). Outputs are float32 (PNG: 8-bit, clipped).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from em_noise.errors import EMInputError
from em_noise.io import EMImage, atomic_write, check_writable, output_path, read_image, write_image
from em_noise.scaling import denormalize, normalize, robust_range
from em_noise.tiling import predict_tiled

Predictor = Callable[[torch.Tensor], torch.Tensor]

# Small tiles are sent to the network in batches of about one 512² tile's worth of pixels (fewer, larger calls).
BATCH_PIXELS = 512 * 512
MAX_TILE_BATCH = 64


def tile_batch_size(tile_size: int) -> int:
    """Tiles per network call for ``tile_size`` px tiles: as many as fit in ``BATCH_PIXELS`` (1..64)."""
    return int(max(1, min(MAX_TILE_BATCH, BATCH_PIXELS // max(1, tile_size * tile_size))))


@dataclass
class Restored:
    """Result of restoring one file: output path, the restored data (input units) and the source image."""

    output: Path
    data: np.ndarray
    source: EMImage
    preview: Path | None = None


def restore_array(predict: Predictor, data: np.ndarray, *, tile_size: int = 512, overlap: int = 64,
                  progress: bool = False, desc: str = "frames") -> np.ndarray:
    """Restore an image (Y, X) or stack (N, Y, X) frame by frame; returns float32 in the input's intensity units."""
    frames = data[None] if data.ndim == 2 else data
    out = np.empty(frames.shape, dtype=np.float32)
    many = frames.shape[0] > 1
    it = range(frames.shape[0])
    if progress and many:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=desc, unit="frame")
    for i in it:
        lo, hi = robust_range(frames[i])
        y = predict_tiled(predict, normalize(frames[i], lo, hi), tile_size=tile_size, overlap=overlap,
                          batch_size=tile_batch_size(tile_size), progress=progress and not many)
        out[i] = denormalize(y, lo, hi)
    return out[0] if data.ndim == 2 else out


def restore_file(path: str | Path, predict: Predictor, *, suffix: str, out_dir: str | Path | None = None,
                 overwrite: bool = False, tile_size: int = 512, overlap: int = 64, preview: bool = False,
                 progress: bool = True) -> Restored:
    """Restore one file and write ``<stem>.<suffix>.<ext>`` (same format, pixel size and MRC header kept).

    Input formats that cannot be written (DM3/DM4/EMD/SER) are written as ``.tif`` with their pixel size.
    """
    img = read_image(path)
    ext = img.path.suffix.lower()
    if ext in (".dm3", ".dm4", ".emd", ".ser"):
        ext = ".tif"
    if ext == ".png" and img.data.ndim == 3:
        raise EMInputError(path, "a PNG cannot hold a stack")
    out = output_path(img.path, suffix, out_dir, ext=ext)
    check_writable(out, like=img, overwrite=overwrite)  # fail before the (long) computation
    prev = out.with_name(f"{Path(img.path).stem}.{suffix}.preview.png") if preview else None
    if prev is not None:
        check_writable(prev, like=img, overwrite=overwrite)
    restored = restore_array(predict, img.data, tile_size=tile_size, overlap=overlap, progress=progress,
                             desc=Path(img.path).name)
    write_image(out, restored, like=img, overwrite=overwrite)
    if prev is not None:
        write_preview(prev, img.data, restored, titles=("input", suffix), overwrite=overwrite)
    return Restored(output=out, data=restored, source=img, preview=prev)


def write_preview(path: str | Path, before: np.ndarray, after: np.ndarray, *, titles: tuple[str, str] = ("input", "output"),
                  overwrite: bool = False) -> Path:
    """Side-by-side PNG of the first frame before and after, each shown between its 0.1/99.9 percentiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = before[0] if before.ndim == 3 else before
    b = after[0] if after.ndim == 3 else after

    def _draw(tmp: Path) -> None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 5.2), dpi=100)
        for ax, img, title in zip(axes, (a, b), titles):
            lo, hi = robust_range(img)
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(title)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(tmp, format="png")
        plt.close(fig)

    return atomic_write(path, _draw, overwrite=overwrite)
