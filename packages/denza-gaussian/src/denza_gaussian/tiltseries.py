"""Tilt series: reading with angles, input checks, preprocessing (background, normalization, binning; alignment in
:mod:`denza_gaussian.align`).

Internally the tilt axis is always along image rows (``y``); a series with ``tilt_axis='x'`` is transposed on
reading and the results are transposed back on writing (:func:`to_user_axes`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from em_noise.errors import EMInputError
from em_noise.io import EMImage, read_image

ANGLE_FILE_SUFFIXES = (".tlt", ".rawtlt")
MDOC_SUFFIX = ".mdoc"
MIN_VIEWS = 3


@dataclass
class TiltSeries:
    """Tilts ``(C, H, W)`` float32 with the tilt axis along rows, angles in degrees, pixel size in Å."""

    data: np.ndarray
    angles_deg: np.ndarray
    pixel_size_A: float | None
    tilt_axis: str = "y"
    angle_source: str = ""
    image: EMImage | None = None
    shifts_px: np.ndarray | None = None
    notes: dict = field(default_factory=dict)


def read_angle_file(path: str | Path) -> np.ndarray:
    """Angles in degrees from an IMOD ``.tlt``/``.rawtlt`` file (one number per line, blank lines ignored)."""
    path = Path(path)
    try:
        lines = path.read_text().split("\n")
    except OSError as exc:
        raise EMInputError(path, f"cannot read angle file: {exc.strerror or exc}") from exc
    out = []
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            continue
        try:
            out.append(float(s.split()[0]))
        except ValueError:
            raise EMInputError(path, f"line {i}: {s[:40]!r} is not an angle in degrees") from None
    if not out:
        raise EMInputError(path, "angle file holds no angles")
    return np.asarray(out, np.float64)


def parse_angles(spec: str) -> tuple[np.ndarray, str]:
    """``--angles`` value: a file path, or ``START:STOP:STEP`` in degrees (STOP included). Returns (angles, source)."""
    if ":" in spec and not Path(spec).exists():
        parts = spec.split(":")
        try:
            start, stop, step = (float(p) for p in parts)
        except ValueError:
            raise EMInputError(None, f"--angles {spec!r}: expected START:STOP:STEP in degrees or an angle file"
                               ) from None
        if len(parts) != 3 or step == 0 or (stop - start) / step < 0:
            raise EMInputError(None, f"--angles {spec!r}: STEP must be non-zero and lead from START to STOP")
        n = int(np.floor((stop - start) / step + 1e-6)) + 1
        return start + step * np.arange(n), f"--angles {spec}"
    return read_angle_file(spec), str(spec)


def find_angle_file(series_path: str | Path) -> Path | None:
    """The ``.tlt`` (preferred), ``.rawtlt`` or SerialEM ``.mdoc`` (``<name>.mrc.mdoc`` or ``<stem>.mdoc``) beside a
    tilt series, if any."""
    p = Path(series_path)
    mdocs = [Path(f"{p}{MDOC_SUFFIX}"), p.with_suffix(MDOC_SUFFIX)]
    for cand in [p.with_suffix(s) for s in ANGLE_FILE_SUFFIXES] + mdocs:
        if cand.exists():
            return cand
    return None


def read_mdoc(path: str | Path) -> tuple[np.ndarray, float | None]:
    """Tilt angles (degrees, in ``ZValue`` order) and pixel size (Å, ``PixelSpacing``) of a SerialEM ``.mdoc``."""
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise EMInputError(path, f"cannot read mdoc file: {exc.strerror or exc}") from exc
    angles: dict[int, float] = {}
    pixel: float | None = None
    z: int | None = None
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            key, _, val = s[1:-1].partition("=")
            z = None
            if key.strip() == "ZValue":
                try:
                    z = int(val.strip())
                except ValueError:
                    raise EMInputError(path, f"line {i}: bad section header {s!r}") from None
            continue
        key, sep, val = s.partition("=")
        if not sep:
            continue
        key, val = key.strip(), val.strip()
        try:
            if key == "TiltAngle" and z is not None:
                angles[z] = float(val.split()[0])
            elif key == "PixelSpacing" and pixel is None:
                pixel = float(val.split()[0])
        except (ValueError, IndexError):
            raise EMInputError(path, f"line {i}: {key} = {val[:30]!r} is not a number") from None
    if not angles:
        raise EMInputError(path, "mdoc holds no [ZValue = N] sections with a TiltAngle")
    zs = sorted(angles)
    if zs != list(range(len(zs))):
        raise EMInputError(path, f"mdoc ZValues are not 0..{len(zs) - 1} (missing sections?)")
    return np.asarray([angles[k] for k in zs], np.float64), (pixel if pixel and pixel > 0 else None)


def check_series(path: str | Path | None, data: np.ndarray, angles_deg: np.ndarray) -> None:
    """Raise :class:`EMInputError` (one line) for any input the reconstruction cannot use."""
    if data.ndim != 3:
        raise EMInputError(path, f"expected a tilt series (stack of images), got a {data.ndim}-D array of shape "
                           f"{data.shape}")
    n = data.shape[0]
    if data.shape[1] == 0 or data.shape[2] == 0:
        raise EMInputError(path, "images are empty")
    if len(angles_deg) != n:
        raise EMInputError(path, f"{len(angles_deg)} tilt angles for {n} images")
    if n < MIN_VIEWS:
        raise EMInputError(path, f"only {n} views; at least {MIN_VIEWS} are needed")
    a = np.asarray(angles_deg, np.float64)
    if not np.all(np.isfinite(a)):
        raise EMInputError(path, "tilt angles contain non-finite values")
    d = np.diff(a)
    if np.any(d == 0):
        dup = a[1:][d == 0][0]
        raise EMInputError(path, f"duplicate tilt angle {dup:g} deg")
    if not (np.all(d > 0) or np.all(d < 0)):
        raise EMInputError(path, "tilt angles are not sorted (expected increasing or decreasing order, as the images)")
    if np.any(np.abs(a) >= 90):
        raise EMInputError(path, f"tilt angle {a[np.argmax(np.abs(a))]:g} deg: |angle| must be < 90 deg")
    if not np.all(np.isfinite(data)):
        bad = int(np.argmax(~np.isfinite(data).reshape(n, -1).all(1)))
        raise EMInputError(path, f"image {bad} contains non-finite values (NaN or Inf)")
    spans = data.reshape(n, -1).max(1) - data.reshape(n, -1).min(1)
    if np.any(spans <= 0):
        raise EMInputError(path, f"image {int(np.argmax(spans <= 0))} is constant (empty frame?)")


def load_tilt_series(path: str | Path, angles: str | None = None, tilt_axis: str = "y") -> TiltSeries:
    """Read a tilt series and its angles (``--angles`` > ``.tlt`` > ``.rawtlt`` > ``.mdoc`` > FEI extended header)
    and check it; the pixel size comes from the image header, else from the ``.mdoc``."""
    if tilt_axis not in ("y", "x"):
        raise EMInputError(None, f"--tilt-axis must be y or x, got {tilt_axis!r}")
    img = read_image(path)
    pixel = img.pixel_size_A
    if angles is not None:
        ang, source = parse_angles(angles)
    elif (f := find_angle_file(path)) is not None:
        if f.suffix == MDOC_SUFFIX:
            ang, mdoc_pixel = read_mdoc(f)
            if mdoc_pixel is not None and (pixel is None or pixel == 1.0):  # 1.0 Å: a header placeholder
                pixel = mdoc_pixel
        else:
            ang = read_angle_file(f)
        source = f.name
    elif img.tilt_angles_deg:
        ang, source = np.asarray(img.tilt_angles_deg, np.float64), "FEI extended header"
    else:
        raise EMInputError(path, "no tilt angles: give --angles FILE|START:STOP:STEP or put a .tlt/.rawtlt/.mdoc "
                           "beside it")
    return series_from_arrays(img.data, ang, pixel, tilt_axis, source, img, path)


def series_from_arrays(data: np.ndarray, angles_deg, pixel_size_A: float | None = None, tilt_axis: str = "y",
                       source: str = "array", image: EMImage | None = None,
                       path: str | Path | None = None) -> TiltSeries:
    """Check a stack ``(C, H, W)`` and its angles and put them in the internal order (increasing angle, tilt axis
    along rows); :func:`to_user_axes` and :func:`file_index` map results back."""
    if tilt_axis not in ("y", "x"):
        raise EMInputError(None, f"tilt axis must be y or x, got {tilt_axis!r}")
    data = np.asarray(data)
    ang = np.asarray(angles_deg, np.float64).ravel()
    if data.ndim == 2:
        data = data[None]
    check_series(path, data, ang)
    order = np.arange(len(ang))[::-1] if ang[0] > ang[-1] else np.arange(len(ang))  # store increasing
    data, ang = data[order], ang[order]
    if tilt_axis == "x":
        data = data.transpose(0, 2, 1)
    return TiltSeries(np.ascontiguousarray(data, np.float32), ang, pixel_size_A, tilt_axis, source, image,
                      notes={"reversed": bool(order[0] != 0)})


def file_index(series: TiltSeries, internal: np.ndarray | int):
    """Index in the user's file of internal (angle-sorted) view ``internal``."""
    n = len(series.angles_deg)
    return n - 1 - np.asarray(internal) if series.notes.get("reversed") else np.asarray(internal)


def to_file_axes_yx(series: TiltSeries, yx: np.ndarray) -> np.ndarray:
    """Pairs ``(…, 2)`` of internal (row, column) quantities in the file's (row, column) axes."""
    return yx[..., ::-1] if series.tilt_axis == "x" else yx


def to_user_axes(series: TiltSeries, stack: np.ndarray, is_volume: bool) -> np.ndarray:
    """Undo the internal transpose (tilt axis x) and, for tilt stacks, the internal angle order."""
    out = stack
    if series.tilt_axis == "x":
        out = out.transpose(0, 2, 1)
    if not is_volume and series.notes.get("reversed"):
        out = out[::-1]
    return np.ascontiguousarray(out)


def bin_stack(data: np.ndarray, k: int) -> np.ndarray:
    """Mean-bin each image by ``k`` (crop to a multiple of ``k``)."""
    if k <= 1:
        return data
    c, h, w = data.shape
    if h // k < 4 or w // k < 4:
        raise EMInputError(None, f"--bin {k} leaves images of {h // k}x{w // k} px; use a smaller --bin")
    d = data[:, : h // k * k, : w // k * k]
    return d.reshape(c, h // k, k, w // k, k).mean(axis=(2, 4)).astype(np.float32)


def subtract_background(data: np.ndarray, border_fraction: float = 0.05) -> np.ndarray:
    """Subtract from each view the median of its outer frame (vacuum around a nanoparticle), clip nothing."""
    c, h, w = data.shape
    b = max(2, int(round(border_fraction * min(h, w))))
    mask = np.zeros((h, w), bool)
    mask[:b] = mask[-b:] = True
    mask[:, :b] = mask[:, -b:] = True
    bg = np.median(data[:, mask], axis=1)
    return (data - bg[:, None, None]).astype(np.float32)


def normalize_series(data: np.ndarray, use: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Divide the whole series by one factor (99.9th percentile of the views ``use``, default all) so values are
    ~[0, 1]; views keep their ratios."""
    s = float(np.percentile(data if use is None else data[use], 99.9))
    if not np.isfinite(s) or s <= 0:
        s = float(np.abs(data).max()) or 1.0
    return (data / s).astype(np.float32), s


def preprocess(series: TiltSeries, bin_factor: int = 1, do_align: bool = False,
               normalize_by: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Background-subtract, optionally bin and align (:mod:`denza_gaussian.align`, cropping to the common field of
    view), and normalize (by the views ``normalize_by``, default all: held-out views must not set the scale, nor
    enter the alignment's reconstructions).

    Returns (tilts ``(C, H', W')`` ~[0,1], intensity scale) such that ``tilts * scale`` is in the input's units.
    """
    data = bin_stack(series.data, bin_factor)
    data = subtract_background(data)
    if do_align:
        from .align import align

        al = align(data, series.angles_deg, use=normalize_by)
        series.shifts_px = al.shifts * bin_factor
        series.notes.update(crop_px=(al.crop[0] * bin_factor, al.crop[1] * bin_factor), rotation_deg=al.rotation_deg,
                            axis_offset_px=al.axis_offset_px * bin_factor, align_rounds=al.rounds)
        data = al.data
    data, scale = normalize_series(data, normalize_by)
    return data, scale
