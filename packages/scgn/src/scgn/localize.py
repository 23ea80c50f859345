"""Atom-column localization on HRTEM frames, gated by lattice coherence, and the per-frame atoms CSV.

Candidate columns come from one of three detectors, all ending in em_noise.metrics.find_peaks:

* ``auto`` (``DEFAULT_CONTRAST``, the default of ``scgn-denoise --atoms``, chosen on tuning frames:
  benchmarks/scgn_detection.py): where the atom map and the high-passed denoised frame clearly agree
  (|correlation| ≥ ``AGREEMENT_MIN``), the columns are the peaks of the denoised frame of the contrast the map shows
  (dark or bright: sign of the correlation) — more precise than the map's own peaks on frames of one contrast — each
  kept only where the map, within ``GATE_RADIUS_PX``, reaches ``MAP_GATE`` (the frame also peaks in an amorphous
  matrix, the map does not); otherwise (mixed contrast, delocalization) the map's peaks, as ``model``;
* ``model``: peaks of the atom map itself, which turns HRTEM phase contrast (dark or bright columns depending on
  defocus and Cs) into bright spots — no contrast assumption, also for frames of mixed contrast;
* ``dark`` / ``bright``: peaks of the (inverted) denoised frame, for users who know their columns' contrast
  (e.g. dark at Scherzer-type underfocus); threshold relative to the frame's robust range.

A candidate is kept only where the frame shows a two-dimensional lattice (:func:`lattice_map`): in windows of
``LATTICE_WINDOW_PX`` px, the power spectrum of the denoised frame, whitened by its median on each ring of equal
spatial frequency (at least ``RING_FLOOR`` of the median over all bins), must hold two local maxima
``LATTICE_SEPARATION`` bins and ``LATTICE_ANGLE_DEG`` apart (not collinear), each ``LATTICE_MIN`` times its ring
median and ``LATTICE_RATIO`` of the strongest; and the input frame must show excess power at both (``CONFIRM_MIN``
times its ring median, and in proportion to the denoised frame's within ``CONFIRM_SHARE``) — a check of the
network's output against the data that no network output alone can pass. Bins within ``AXIS_BAND`` bins of either
frequency axis are left out (detector row / column patterns). Vacuum, amorphous film and interference fringes (one
periodicity) show no such pair. A column is kept where at least ``LATTICE_FRACTION`` of the windows covering it show
a lattice (``LATTICE_SCOPE = 'column'``), or, with scope ``'frame'``, anywhere in a frame where some pixel reaches
that fraction: a nucleus too small to fill a window is then kept when the frame shows a lattice elsewhere. A column's
confidence is that fraction (scope 'frame': the frame's largest) times its peak strength (for peaks of the atom map
its value there, for peaks of the frame their height in the frame's robust range).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from em_noise.scaling import normalize, robust_range

CSV_COLUMNS = ("frame", "x_px", "y_px", "x_A", "y_A", "intensity", "confidence")
MIN_DISTANCE_PX = 3
MATCH_RADIUS_PX = 2.0  # a detection counts when within this distance of a true column (atom spots σ ≈ 1 px)
THRESHOLD = 0.3  # minimum atom-map value (map ≈ 1 on a column centre)
CONTRAST_THRESHOLD_REL = 0.5  # dark/bright: minimum peak height as a fraction of the frame's range
HIGHPASS_SIGMA_PX = 8.0  # auto: Gaussian σ removed from the denoised frame before correlating it with the map
AGREEMENT_MIN = 0.25  # auto: |correlation| of map and frame above which the frame's peaks are taken (chosen on
#                       validation frames, benchmarks/scgn_bench.py's validation seeds: nucleation + the training mix)
GATE_RADIUS_PX = 1  # auto: a frame peak is kept where the map's maximum within this radius reaches MAP_GATE
MAP_GATE = 0.2  # auto: atom-map value (≈ 1 on a column centre) a frame peak needs nearby (chosen on the tuning
#                  frames of benchmarks/scgn_bench.py with the bundled hrtem-atoms map)
CONTRASTS = ("auto", "model", "dark", "bright")
DEFAULT_CONTRAST = "auto"  # chosen on the tuning frames of benchmarks/scgn_detection.py
LATTICE_WINDOW_PX = 128  # side of the windows whose spectra are tested for a lattice
LATTICE_STEP_PX = 32  # window stride (a pixel is covered by up to (128 / 32)² = 16 windows)
LATTICE_MIN = 30.0  # whitened spectral power of both lattice reflections in the denoised frame
CONFIRM_MIN = 20.0  # whitened spectral power of the input at both reflections (3×3 bins)
CONFIRM_SHARE = 0.1  # the input's power at a reflection, relative to its strongest one, >= this × the denoised's
LATTICE_RATIO = 0.001  # the weaker reflection holds at least this fraction of the strongest peak's power
LATTICE_ANGLE_DEG = 30.0  # the two reflections are at least this far from collinear
LATTICE_SEPARATION = 4.0  # bins between the two reflections (and between one and the other's mirror)
LATTICE_R_MIN = 3.0  # bins: lower spatial frequencies (intensity gradients) are not lattice reflections
RING_FLOOR = 0.01  # lowest ring median used for whitening, relative to the median over all searched bins
AXIS_BAND = 1.5  # bins around the kx = 0 and ky = 0 axes left out (detector row / column patterns)
LATTICE_FRACTION = 0.25  # a column needs this fraction of its covering windows to show a lattice
LATTICE_SCOPES = ("column", "frame")
LATTICE_SCOPE = "column"  # where LATTICE_FRACTION is required: at each column, or somewhere in its frame


@dataclass
class AtomTable:
    """Detected columns of every frame: frame index, x / y px, intensity (denoised frame, input units) and a
    confidence in [0, 1] (lattice coherence × peak strength, see the module docstring)."""

    frame: np.ndarray
    xy_px: np.ndarray
    intensity: np.ndarray
    confidence: np.ndarray
    pixel_size_A: float | None = None

    def __len__(self) -> int:
        return len(self.frame)

    def columns(self) -> dict[str, np.ndarray]:
        """The table as named columns (those of the CSV; Å columns NaN without a pixel size)."""
        px = np.nan if self.pixel_size_A is None else self.pixel_size_A
        return {"frame": self.frame, "x_px": self.xy_px[:, 0], "y_px": self.xy_px[:, 1], "x_A": self.xy_px[:, 0] * px,
                "y_A": self.xy_px[:, 1] * px, "intensity": self.intensity, "confidence": self.confidence}

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns()[name]


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


def auto_contrast(amap: np.ndarray, image: np.ndarray) -> str:
    """What ``auto`` uses on one frame: 'bright' / 'dark' where map and frame clearly agree
    (``|map_agreement| ≥ AGREEMENT_MIN``, the sign), else 'model'."""
    c = map_agreement(amap, image)
    return ("bright" if c > 0 else "dark") if abs(c) >= AGREEMENT_MIN else "model"


def contrast_from_map(amap: np.ndarray, image: np.ndarray, highpass_sigma_px: float = HIGHPASS_SIGMA_PX) -> str:
    """'bright' when the atom map correlates positively with the high-passed ``image``, else 'dark'."""
    return "bright" if map_agreement(amap, image, highpass_sigma_px) > 0 else "dark"


def detect_columns(amap: np.ndarray | None, image: np.ndarray, contrast: str, *,
                   min_distance_px: float | None = None, threshold: float | None = None,
                   map_detection: dict | None = None, gate: np.ndarray | None = None) -> np.ndarray:
    """(N, 2) x, y px of the columns of one frame by ``contrast`` (see the module docstring).

    ``amap``: the frame's atom map (needed for 'model' and 'auto'); ``image``: the denoised frame;
    ``map_detection``: peak settings of the atom map (``min_distance_px``, ``threshold``: a card's ``detection``);
    ``min_distance_px`` / ``threshold`` override the settings of whichever peaks are taken.
    'auto' takes the frame's peaks, of the contrast the map shows, where the map and the frame agree
    (``|map_agreement| ≥ AGREEMENT_MIN``), gated by the map; else the map's peaks. ``gate``: an atom map; peaks of
    the frame are kept only where it reaches ``MAP_GATE`` within ``GATE_RADIUS_PX``.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    if contrast in ("auto", "model") and amap is None:
        raise ValueError(f"contrast {contrast!r} needs an atom map")
    det = map_detection or {}
    if contrast == "auto":
        contrast, gate = auto_contrast(amap, image), amap
    if contrast == "model":
        return find_columns(amap, det.get("min_distance_px", MIN_DISTANCE_PX) if min_distance_px is None
                            else min_distance_px, det.get("threshold", THRESHOLD) if threshold is None else threshold)
    pos = find_contrast_columns(image, contrast, MIN_DISTANCE_PX if min_distance_px is None else min_distance_px,
                                CONTRAST_THRESHOLD_REL if threshold is None else threshold)
    if gate is None or not len(pos):
        return pos
    from scipy.ndimage import maximum_filter

    near = maximum_filter(np.asarray(gate, np.float64), size=2 * GATE_RADIUS_PX + 1, mode="nearest")
    ij = np.clip(np.round(pos[:, ::-1]).astype(int), 0, np.array(near.shape) - 1)
    return pos[near[ij[:, 0], ij[:, 1]] >= MAP_GATE]


class _Spectrum:
    """Frequency grid of ``win``² windows: bins searched for reflections, equal-frequency rings, Hann taper."""

    def __init__(self, win: int):
        ky, kx = np.meshgrid(np.fft.fftfreq(win) * win, np.fft.rfftfreq(win) * win, indexing="ij")
        r = np.hypot(ky, kx)
        self.ky, self.kx = ky, kx
        self.search = (r >= LATTICE_R_MIN) & (r <= win / 2) & (np.abs(kx) > AXIS_BAND) & (np.abs(ky) > AXIS_BAND)
        ring = np.rint(r).astype(int)
        self.rings = [(ring == g) & (r <= win / 2) for g in np.unique(ring[self.search])]
        self.taper = np.outer(np.hanning(win), np.hanning(win))

    def whitened(self, tiles: np.ndarray) -> np.ndarray:
        """Power spectra of (n, win, win) tiles divided by their median on each ring (at least ``RING_FLOOR`` times
        the median over all searched bins, so that the empty outer rings of a nearly noiseless frame do not turn
        leakage into reflections)."""
        t = (tiles - tiles.mean(axis=(1, 2), keepdims=True)) * self.taper
        p = np.abs(np.fft.rfft2(t)) ** 2
        floor = RING_FLOOR * np.median(p[:, self.search], axis=1, keepdims=True) + 1e-30
        q = np.zeros_like(p)
        for m in self.rings:
            q[:, m] = p[:, m] / np.maximum(np.median(p[:, m], axis=1, keepdims=True), floor)
        return q

    def lattice_score(self, q: np.ndarray, confirm: np.ndarray, confirm_min: float = CONFIRM_MIN) -> float:
        """Power of the weaker of the best pair of non-collinear reflections (0 when there is none)."""
        from scipy.ndimage import maximum_filter

        raw = maximum_filter(confirm, size=3, mode="wrap")
        peak = (q == maximum_filter(q, size=3, mode="wrap")) & self.search & (q >= LATTICE_MIN) & (raw >= confirm_min)
        iy, ix = np.nonzero(peak)
        if len(iy) < 2:
            return 0.0
        top = np.argsort(q[iy, ix])[::-1][:12]
        iy, ix = iy[top], ix[top]
        v, r = q[iy, ix], raw[iy, ix]
        k = np.stack([self.ky[iy, ix], self.kx[iy, ix]], axis=1)
        u = k / np.linalg.norm(k, axis=1, keepdims=True)
        apart = np.minimum(np.linalg.norm(k[:, None] - k[None], axis=2), np.linalg.norm(k[:, None] + k[None], axis=2))
        weaker = np.minimum(v[:, None], v[None])
        # the input holds each reflection in proportion (within CONFIRM_SHARE) to the denoised frame
        kept = r / r[0] >= CONFIRM_SHARE * v / v[0]
        ok = (np.abs(u @ u.T) < np.cos(np.deg2rad(LATTICE_ANGLE_DEG))) & (apart >= LATTICE_SEPARATION) & (
            weaker >= LATTICE_RATIO * v[0]) & kept[:, None] & kept[None, :]
        return float(weaker[ok].max()) if ok.any() else 0.0


def _starts(length: int, win: int, step: int) -> list[int]:
    starts = list(range(0, length - win + 1, step))
    return starts if starts[-1] == length - win else starts + [length - win]


def lattice_map(image: np.ndarray, confirm: np.ndarray | None = None, window: int = LATTICE_WINDOW_PX,
                step: int = LATTICE_STEP_PX, confirm_min: float = CONFIRM_MIN) -> np.ndarray:
    """(H, W) fraction of the windows covering each pixel whose spectrum shows a 2-D lattice (module docstring).

    ``image``: the frame tested (the denoised frame); ``confirm``: the frame the reflections must also be found in
    (the input frame; default: ``image`` itself).
    """
    img = np.asarray(image, np.float64)
    raw = img if confirm is None else np.asarray(confirm, np.float64)
    h, w = img.shape
    win = min(window, h, w)
    if win < 4 * LATTICE_R_MIN:
        return np.zeros((h, w))
    spec = _Spectrum(win)
    ys, xs = _starts(h, win, step), _starts(w, win, step)
    hits, cover = np.zeros((h, w)), np.zeros((h, w))
    for y0 in ys:
        q = spec.whitened(np.stack([img[y0:y0 + win, x0:x0 + win] for x0 in xs]))
        qr = q if confirm is None else spec.whitened(np.stack([raw[y0:y0 + win, x0:x0 + win] for x0 in xs]))
        for b, x0 in enumerate(xs):
            cover[y0:y0 + win, x0:x0 + win] += 1.0
            if spec.lattice_score(q[b], qr[b], confirm_min) > 0:
                hits[y0:y0 + win, x0:x0 + win] += 1.0
    return hits / np.maximum(cover, 1.0)


def peak_strength(amap: np.ndarray | None, image: np.ndarray, contrast: str, xy_px: np.ndarray) -> np.ndarray:
    """Peak strength in [0, 1] of each column: the atom map's value (peaks of the map), else its height in the
    frame's robust range (peaks of the frame; inverted for dark columns)."""
    if amap is not None:
        return np.clip(sample_at(amap, xy_px), 0.0, 1.0)
    img = normalize(image, *robust_range(image))
    return np.clip(sample_at(1.0 - img if contrast == "dark" else img, xy_px), 0.0, 1.0)


def frame_columns(denoised: np.ndarray, amap: np.ndarray | None, contrast: str, coverage: np.ndarray | None, *,
                  fraction: float = LATTICE_FRACTION, scope: str = LATTICE_SCOPE, min_distance_px: float | None = None,
                  threshold: float | None = None,
                  map_detection: dict | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Columns of one frame: :func:`detect_columns` candidates kept where ``coverage`` (the frame's
    :func:`lattice_map`; None: no lattice gate) reaches ``fraction`` — at the column (``scope='column'``) or anywhere
    in the frame (``'frame'``: all candidates or none). Returns (positions, their coverage (scope 'frame': the frame's
    largest), the detector used: 'auto' resolved per frame)."""
    if scope not in LATTICE_SCOPES:
        raise ValueError(f"scope must be one of {LATTICE_SCOPES}, got {scope!r}")
    used = auto_contrast(amap, denoised) if contrast == "auto" and amap is not None else contrast
    pos = detect_columns(amap, denoised, used, min_distance_px=min_distance_px, threshold=threshold,
                         map_detection=map_detection, gate=amap if contrast == "auto" else None)
    if coverage is None:
        return pos, np.ones(len(pos)), used
    if scope == "frame":
        top = float(np.max(coverage)) if coverage.size else 0.0
        keep = top >= fraction and top > 0
        return (pos, np.full(len(pos), top), used) if keep else (pos[:0], np.zeros(0), used)
    coherence = sample_at(coverage, pos)
    keep = coherence >= fraction
    return pos[keep], coherence[keep], used


def locate_columns(frames: np.ndarray, denoised: np.ndarray, maps: np.ndarray | None = None, *,
                   contrast: str = DEFAULT_CONTRAST, pixel_size_A: float | None = None,
                   min_distance_px: float | None = None,
                   threshold: float | None = None, map_detection: dict | None = None, lattice: bool = True,
                   scope: str = LATTICE_SCOPE, progress: bool = False, desc: str = "atoms") -> AtomTable:
    """Columns of every frame (image (Y, X) or stack (N, Y, X) of inputs, their denoised frames and atom maps):
    :func:`detect_columns` candidates, kept where :func:`lattice_map` shows a lattice (``lattice=False``: all),
    intensities read from the denoised frames; ``scope``: see :func:`frame_columns`."""
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    stack = [np.asarray(a) for a in (frames, denoised) + (() if maps is None else (maps,))]
    stack = [a[None] if a.ndim == 2 else a for a in stack]
    from tqdm.auto import tqdm

    idx, xy, inten, conf = [], [], [], []
    for i in tqdm(range(len(stack[0])), desc=desc, unit="frame", disable=not progress):
        frame, out = stack[0][i], stack[1][i]
        amap = stack[2][i] if maps is not None else None
        coverage = lattice_map(out, frame) if lattice else None
        pos, coherence, used = frame_columns(out, amap, contrast, coverage, scope=scope,
                                             min_distance_px=min_distance_px, threshold=threshold,
                                             map_detection=map_detection)
        idx.append(np.full(len(pos), i, dtype=np.int64))
        xy.append(pos)
        inten.append(sample_at(out, pos))
        conf.append(coherence * peak_strength(amap if used == "model" else None, out, used, pos))
    return AtomTable(frame=np.concatenate(idx), xy_px=np.concatenate(xy).reshape(-1, 2),
                     intensity=np.concatenate(inten), confidence=np.concatenate(conf), pixel_size_A=pixel_size_A)


def write_atoms_csv(path: str | Path, table: AtomTable, *, overwrite: bool = False) -> Path:
    """Write ``frame, x_px, y_px, x_A, y_A, intensity, confidence`` (Å columns empty without a pixel size).

    Atomic (em_noise.io.write_text); an existing file only with ``overwrite``.
    """
    from em_noise.io import write_text

    px = table.pixel_size_A
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for f, (x, y), v, c in zip(table.frame, table.xy_px, table.intensity, table.confidence):
        xa, ya = ("", "") if px is None else (f"{x * px:.4f}", f"{y * px:.4f}")
        w.writerow((int(f), f"{x:.3f}", f"{y:.3f}", xa, ya, f"{v:.6g}", f"{c:.3f}"))
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
