"""Choose the image in a multi-signal file (rosettasciio signal dicts); tell spectra and diffraction apart.

An image is a signal with two spatial axes (length units, or none), alone or as a stack along one more axis.
Spectra (an energy axis), diffraction (reciprocal units) and other data are named and refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from em_noise.errors import EMInputError
from em_noise.formats.units import is_degrees, length_to_A, unit_kind

# Detector names in titles, most wanted first ('DF' also matches DF4-A, DF-S; 'BF' also ABF).
DETECTOR_PREFERENCE = ("HAADF", "ADF", "DF", "BF")
_PREVIEW = "rgb preview"


@dataclass
class Signal:
    """One signal of a file, classified."""

    index: int
    title: str
    shape: tuple[int, ...]
    kind: str  # 'image', 'stack', or what it is instead ('spectrum image', 'diffraction', ...)
    why: str = ""
    pixel_size_A: float | None = None
    colour_axis: int | None = None  # the RGB(A) sample axis of a colour image, if any
    tilt_angles_deg: list[float] | None = None  # a stack along an axis in degrees: a tilt series
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_image(self) -> bool:
        return self.kind in ("image", "stack", _PREVIEW)

    def describe(self) -> str:
        name = f"'{self.title}' " if self.title else ""
        shape = " x ".join(str(n) for n in self.shape)
        return f"{name}{self.kind} ({shape}{', ' + self.why if self.why else ''})"


def _title(sig: dict) -> str:
    return str(sig.get("metadata", {}).get("General", {}).get("title", "") or "")


def _axes(axes: list[dict], ndim: int) -> tuple[list[dict], list[dict]]:
    """(navigation, signal) axes; without 'navigate' flags the last two axes are the signal."""
    if len(axes) != ndim:
        axes = [{} for _ in range(ndim)]
    if any("navigate" in a for a in axes):
        return [a for a in axes if a.get("navigate")], [a for a in axes if not a.get("navigate")]
    return axes[:-2], axes[-2:]


def _pixel_A(axis: dict) -> float | None:
    scale = length_to_A(axis.get("units"))
    try:
        px = float(axis.get("scale", 0)) * scale if scale is not None else None
    except (TypeError, ValueError):
        return None
    return px if px is not None and np.isfinite(px) and px > 0 else None


def classify(index: int, sig: dict) -> Signal:
    """What ``sig`` holds: an image or stack of images, or what else (with its units)."""
    data = sig["data"]
    shape = tuple(int(n) for n in np.shape(data))
    dtype = np.dtype(getattr(data, "dtype", np.asarray(data).dtype))
    out = Signal(index, _title(sig), shape, "image", raw=sig)
    axes = list(sig.get("axes") or [])
    if len(axes) == len(shape):  # rosettasciio's TIFF reader names the RGB samples axis of YCbCr/JPEG pages
        out.colour_axis = next((i for i, a in enumerate(axes) if a.get("name") == "sample" and shape[i] in (3, 4)),
                               None)
    if out.colour_axis is not None:  # without the samples axis, the last two are the image
        del axes[out.colour_axis]
        axes = [{**a, "navigate": i < len(axes) - 2} for i, a in enumerate(axes)]
    nav, sig_axes = _axes(axes, len(shape) - (out.colour_axis is not None))
    kinds = [unit_kind(a.get("units")) for a in sig_axes]
    units = [str(a.get("units")) for a in sig_axes]
    if dtype.kind == "c":
        out.kind, out.why = "complex data", f"{dtype}"
    elif "reciprocal" in kinds:
        out.kind, out.why = "diffraction", f"axis in {units[kinds.index('reciprocal')]}"
    elif "energy" in kinds:
        e = units[kinds.index("energy")]
        out.kind = "spectrum image" if nav or len(sig_axes) > 1 else "spectrum"
        out.why = f"energy axis in {e}"
    elif len(sig_axes) < 2:
        out.kind = "line scan" if nav else "1-D signal"
    elif len(sig_axes) == 2:
        if "angle" in kinds or "time" in kinds or "other" in kinds:
            bad = next(u for u, k in zip(units, kinds) if k not in ("length", "none"))
            out.kind, out.why = "non-spatial 2-D signal", f"axis in {bad}"
        elif len(nav) > 1:
            out.kind, out.why = "4-D data", "a grid of images"
        elif nav:
            out.kind = "stack"
            out.tilt_angles_deg = _tilts(nav[0])
    elif len(sig_axes) == 3 and kinds[-1] in ("length", "none") and kinds[-2] in ("length", "none") \
            and kinds[0] in ("length", "none", "time", "angle") and not nav:
        out.kind = "stack"  # frames, depth or tilt along the first axis (Berkeley EMD stores all axes as signal)
        out.tilt_angles_deg = _tilts(sig_axes[0])
        sig_axes = sig_axes[1:]
    elif len(sig_axes) == 3:
        bad = next((u for u, k in zip(units, kinds) if k not in ("length", "none")), units[-1])
        out.kind, out.why = "3-D signal", f"axis in {bad} is not spatial"
    else:
        out.kind, out.why = f"{len(shape)}-D data", ""
    if out.is_image:
        if dtype.names or out.colour_axis is not None:
            out.kind = _PREVIEW if len(shape) - (out.colour_axis is not None) == 2 else "colour stack"
        out.pixel_size_A = _pixel_A(sig_axes[-1]) if sig_axes else None
    return out


def _tilts(axis: dict) -> list[float] | None:
    """The angles (degrees) of a stack axis calibrated in degrees, as DigitalMicrograph tilt series have."""
    if not is_degrees(axis.get("units")):
        return None
    try:
        offset, scale, size = float(axis.get("offset", 0.0)), float(axis["scale"]), int(axis["size"])
    except (KeyError, TypeError, ValueError):
        return None
    return [offset + scale * i for i in range(size)] if scale != 0 else None


def _detector_rank(title: str) -> int:
    t = title.upper()
    return next((i for i, name in enumerate(DETECTOR_PREFERENCE) if name in t), len(DETECTOR_PREFERENCE))


def pick_image(path: Path, signals: list[dict], title: str | None = None) -> tuple[Signal, list[Signal]]:
    """The image signal to use and every signal classified; EMInputError (one line) when there is none.

    ``title`` picks a signal by its title (case-insensitive; whole title first, then part of it). Otherwise the
    preferred detector (HAADF, ADF, DF, BF), then a grayscale, calibrated signal, then the first.
    """
    found = [classify(i, s) for i, s in enumerate(signals)]
    images = [s for s in found if s.is_image]
    if title is not None:
        wanted = title.strip().lower()
        named = [s for s in found if s.title.lower() == wanted] or [s for s in found if wanted in s.title.lower()]
        if not named:
            titles = ", ".join(repr(s.title) for s in found if s.title) or "none"
            raise EMInputError(path, f"no signal titled {title!r} (titles: {titles})")
        if not named[0].is_image:
            raise EMInputError(path, f"signal {named[0].describe()} is not an image")
        return named[0], found
    if not images:
        if not found:
            raise EMInputError(path, "file holds no signal")
        what = "; ".join(s.describe() for s in found)
        raise EMInputError(path, f"holds no image, only: {what}")
    best = min(images, key=lambda s: (_detector_rank(s.title), s.kind == _PREVIEW, s.pixel_size_A is None, s.index))
    return best, found


def image_data(path: Path, chosen: Signal) -> np.ndarray:
    """The chosen signal's array (computed if lazy); an RGB preview only when its channels agree."""
    data = np.asarray(chosen.raw["data"])
    rgb = None
    if data.dtype.names:
        if len(data.dtype.names) < 3:
            raise EMInputError(path, f"unsupported structured data ({data.dtype})")
        rgb = [data[n] for n in data.dtype.names[:3]]
    elif chosen.colour_axis is not None:
        rgb = list(np.moveaxis(data, chosen.colour_axis, 0)[:3])
    if rgb is not None:
        if not (np.array_equal(rgb[0], rgb[1]) and np.array_equal(rgb[0], rgb[2])):
            raise EMInputError(path, "colour image; EM data must be single-channel (grayscale)")
        data = rgb[0]
    return data


def read_vendor(path: Path, signal: str | None = None):
    """Gatan DM3/DM4, Velox/Berkeley EMD, TIA SER, hyperspy HSPY/HDF5 through rosettasciio: the image signal,
    pixel size (Å)."""
    ext = path.suffix.lower()
    kwargs: dict[str, Any] = {}
    try:
        if ext in (".dm3", ".dm4"):
            from rsciio.digitalmicrograph import file_reader
        elif ext == ".emd":
            from rsciio.emd import file_reader

            kwargs["select_type"] = "images"  # Velox: images only, no spectrum stream (ignored by Berkeley EMD)
        elif ext in (".hspy", ".hdf5"):
            from rsciio.hspy import file_reader
        else:
            from rsciio.tia import file_reader
    except ImportError:
        raise EMInputError(path, f"reading {ext} files needs rosettasciio: pip install 'em-noise[formats]'") from None
    try:
        signals = file_reader(str(path), **kwargs)
    except ModuleNotFoundError as exc:  # rosettasciio names the package it misses (sparse for Velox EDS)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "a package is missing"
        raise EMInputError(path, f"{reason} (pip install 'em-noise[formats]')") from None
    if not signals and kwargs:  # a Velox file without images: say what it holds
        try:
            signals = file_reader(str(path), lazy=True)
        except Exception:  # noqa: BLE001 - only used to name what the file holds
            signals = []
        if not signals:
            raise EMInputError(path, "holds no image signal")
    chosen, found = pick_image(path, signals, signal)
    meta: dict[str, Any] = {"signal_title": chosen.title}
    if chosen.tilt_angles_deg is not None:
        meta["tilt_angles_deg"] = chosen.tilt_angles_deg
    if len(found) > 1:
        meta["signals"] = [s.describe() for s in found]
        meta["signal_index"] = chosen.index
    header = {"original_metadata": chosen.raw.get("original_metadata")}
    return image_data(path, chosen), chosen.pixel_size_A, meta, header
