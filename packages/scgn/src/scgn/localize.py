"""Atom-column localization on HRTEM frames and the per-frame atoms CSV.

Three detectors, all ending in em_noise.metrics.find_peaks:

* ``auto`` (default of ``scgn-denoise --atoms``): where the atom map of the ``hrtem-atoms`` network and the
  high-passed denoised frame clearly agree (|correlation| ≥ ``AGREEMENT_MIN``), the columns are the peaks of the
  denoised frame of the contrast the map shows (dark or bright: sign of the correlation) — more precise than the
  map's own peaks on frames of one contrast; otherwise (mixed contrast, delocalization, amorphous areas) the
  map's peaks, as ``model``;
* ``model``: peaks of the atom map itself, which turns HRTEM phase contrast (dark or bright columns depending on
  defocus and Cs) into bright spots — no contrast assumption, also for frames of mixed contrast;
* ``dark`` / ``bright``: peaks of the (inverted) denoised frame, for users who know their columns' contrast
  (e.g. dark at Scherzer-type underfocus); threshold relative to the frame's robust range.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from em_noise.scaling import normalize, robust_range
from em_noise.tiling import predict_tiled

CSV_COLUMNS = ("frame", "x_px", "y_px", "x_A", "y_A", "intensity")
MIN_DISTANCE_PX = 3
MATCH_RADIUS_PX = 2.0  # a detection counts when within this distance of a true column (atom spots σ ≈ 1 px)
THRESHOLD = 0.3  # minimum atom-map value (map ≈ 1 on a column centre)
CONTRAST_THRESHOLD_REL = 0.5  # dark/bright: minimum peak height as a fraction of the frame's range
HIGHPASS_SIGMA_PX = 8.0  # auto: Gaussian σ removed from the denoised frame before correlating it with the map
AGREEMENT_MIN = 0.25  # auto: |correlation| of map and frame above which the frame's peaks are taken (chosen on
#                       validation frames, benchmarks/scgn_bench.py's validation seeds: nucleation + the training mix)
CONTRASTS = ("auto", "model", "dark", "bright")


@dataclass
class AtomTable:
    """Detected columns of every frame: (frame index, x px, y px, intensity in the output image's units)."""

    frame: np.ndarray
    xy_px: np.ndarray
    intensity: np.ndarray
    pixel_size_A: float | None = None

    def __len__(self) -> int:
        return len(self.frame)


def atom_map(predict: Callable[[torch.Tensor], torch.Tensor], frame: np.ndarray, *, tile_size: int = 512,
             overlap: int = 64) -> np.ndarray:
    """Atom map (≈ [0, 1], σ≈1 px spots) of one frame in any intensity units, via robust scaling + tiling."""
    lo, hi = robust_range(frame)
    return predict_tiled(predict, normalize(frame, lo, hi), tile_size=tile_size, overlap=overlap)


def find_columns(amap: np.ndarray, min_distance_px: float = MIN_DISTANCE_PX,
                 threshold: float = THRESHOLD) -> np.ndarray:
    """(N, 2) x, y px of the atom-map peaks higher than ``threshold`` and ≥ ``min_distance_px`` apart."""
    from em_noise.metrics import find_peaks

    return np.asarray(find_peaks(amap, min_distance_px=int(round(min_distance_px)), threshold_abs=threshold),
                      dtype=np.float64).reshape(-1, 2)


def sample_at(image: np.ndarray, xy_px: np.ndarray) -> np.ndarray:
    """Bilinear image values at (x, y) px positions."""
    from scipy.ndimage import map_coordinates

    if len(xy_px) == 0:
        return np.zeros(0, dtype=np.float64)
    return map_coordinates(np.asarray(image, np.float64), [xy_px[:, 1], xy_px[:, 0]], order=1, mode="nearest")


def find_contrast_columns(image: np.ndarray, contrast: str, min_distance_px: float = MIN_DISTANCE_PX,
                          threshold_rel: float = CONTRAST_THRESHOLD_REL) -> np.ndarray:
    """(N, 2) x, y px of dark or bright columns of an HRTEM image (any units), by peak finding."""
    from em_noise.metrics import find_peaks

    if contrast not in ("dark", "bright"):
        raise ValueError(f"contrast must be 'dark' or 'bright', got {contrast!r}")
    img = normalize(image, *robust_range(image))
    img = -img if contrast == "dark" else img
    return np.asarray(find_peaks(img, min_distance_px=int(round(min_distance_px)), threshold_rel=threshold_rel),
                      dtype=np.float64).reshape(-1, 2)


def map_agreement(amap: np.ndarray, image: np.ndarray, highpass_sigma_px: float = HIGHPASS_SIGMA_PX) -> float:
    """Normalized correlation (−1…1) of an atom map with the high-passed ``image``: > 0 bright columns, < 0 dark."""
    from scipy.ndimage import gaussian_filter

    img = np.asarray(image, np.float64)
    detail = img - gaussian_filter(img, highpass_sigma_px, mode="reflect")
    a = np.asarray(amap, np.float64) - float(np.mean(amap))
    den = float(np.sqrt((a * a).sum() * (detail * detail).sum()))
    return float((a * detail).sum()) / den if den > 0 else 0.0


def contrast_from_map(amap: np.ndarray, image: np.ndarray, highpass_sigma_px: float = HIGHPASS_SIGMA_PX) -> str:
    """'bright' when the atom map correlates positively with the high-passed ``image``, else 'dark'."""
    return "bright" if map_agreement(amap, image, highpass_sigma_px) > 0 else "dark"


def detect_columns(amap: np.ndarray | None, image: np.ndarray, contrast: str, *,
                   min_distance_px: float | None = None, threshold: float | None = None,
                   map_detection: dict | None = None) -> np.ndarray:
    """(N, 2) x, y px of the columns of one frame by ``contrast`` (see the module docstring).

    ``amap``: the frame's atom map (needed for 'model' and 'auto'); ``image``: the denoised frame;
    ``map_detection``: peak settings of the atom map (``min_distance_px``, ``threshold``: a card's ``detection``);
    ``min_distance_px`` / ``threshold`` override the settings of whichever peaks are taken.
    'auto' takes the frame's peaks, of the contrast the map shows, where the map and the frame agree
    (``|map_agreement| ≥ AGREEMENT_MIN``), else the map's peaks.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    if contrast in ("auto", "model") and amap is None:
        raise ValueError(f"contrast {contrast!r} needs an atom map")
    if contrast == "auto":
        c = map_agreement(amap, image)
        contrast = ("bright" if c > 0 else "dark") if abs(c) >= AGREEMENT_MIN else "model"
    if contrast == "model":
        det = map_detection or {}
        return find_columns(amap, det.get("min_distance_px", MIN_DISTANCE_PX) if min_distance_px is None
                            else min_distance_px, det.get("threshold", THRESHOLD) if threshold is None else threshold)
    return find_contrast_columns(image, contrast, MIN_DISTANCE_PX if min_distance_px is None else min_distance_px,
                                 CONTRAST_THRESHOLD_REL if threshold is None else threshold)


def locate_atoms(predict: Callable[[torch.Tensor], torch.Tensor] | None, frames: Iterable[np.ndarray],
                 outputs: Iterable[np.ndarray], *, pixel_size_A: float | None = None, contrast: str = "auto",
                 min_distance_px: float | None = None, threshold: float | None = None,
                 map_detection: dict | None = None, tile_size: int = 512, overlap: int = 64) -> AtomTable:
    """Columns of every frame (:func:`detect_columns`; the atom map that ``predict`` makes of each input frame),
    intensities read from ``outputs`` (the denoised frames)."""
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    idx, xy, inten = [], [], []
    for i, (frame, out) in enumerate(zip(frames, outputs)):
        amap = atom_map(predict, frame, tile_size=tile_size, overlap=overlap) if contrast in ("auto", "model") else None
        pos = detect_columns(amap, out, contrast, min_distance_px=min_distance_px, threshold=threshold,
                             map_detection=map_detection)
        idx.append(np.full(len(pos), i, dtype=np.int64))
        xy.append(pos)
        inten.append(sample_at(out, pos))
    return AtomTable(
        frame=np.concatenate(idx) if idx else np.zeros(0, np.int64),
        xy_px=np.concatenate(xy) if xy else np.zeros((0, 2)),
        intensity=np.concatenate(inten) if inten else np.zeros(0),
        pixel_size_A=pixel_size_A,
    )


def write_atoms_csv(path: str | Path, table: AtomTable, *, overwrite: bool = False) -> Path:
    """Write ``frame, x_px, y_px, x_A, y_A, intensity`` (Å columns empty when the pixel size is unknown).

    Atomic (em_noise.io.write_text); an existing file only with ``overwrite``.
    """
    from em_noise.io import write_text

    px = table.pixel_size_A
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for f, (x, y), v in zip(table.frame, table.xy_px, table.intensity):
        xa, ya = ("", "") if px is None else (f"{x * px:.4f}", f"{y * px:.4f}")
        w.writerow((int(f), f"{x:.3f}", f"{y:.3f}", xa, ya, f"{v:.6g}"))
    return write_text(path, buf.getvalue(), overwrite=overwrite)


def tune_detection(amaps: list[np.ndarray], true_xy: list[np.ndarray], *, min_distances_px=(2, 3, 4),
                   thresholds=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6),
                   match_radius_px: float = MATCH_RADIUS_PX) -> dict:
    """Peak-finding settings with the best mean F1 on validation atom maps (never the test set).

    Returns ``{'min_distance_px', 'threshold', 'match_radius_px', 'f1', 'precision', 'recall'}`` (means).
    """
    from em_noise.metrics import match_positions

    best: dict | None = None
    for md in min_distances_px:
        for thr in thresholds:
            scores = [match_positions(find_columns(a, md, thr), t, match_radius_px) for a, t in zip(amaps, true_xy)]
            mean = {k: float(np.mean([sc[k] for sc in scores])) for k in ("f1", "precision", "recall")}
            if best is None or mean["f1"] > best["f1"]:
                best = {"min_distance_px": md, "threshold": thr, "match_radius_px": match_radius_px, **mean}
    return best
