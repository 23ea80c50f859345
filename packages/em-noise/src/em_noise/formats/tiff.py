"""TIFF: vendor scales through rosettasciio (DM, FEI/Thermo, Zeiss, Olympus, TVIPS, ImageJ), tifffile otherwise.

Outputs are ImageJ TIFFs: resolution tags in pixels per micron with ``unit=micron``, which Fiji and
rosettasciio/hyperspy both read as a scale in µm, and a ``provenance=<JSON>`` line in the description.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from em_noise.errors import EMInputError
from em_noise.formats import provenance as prov
from em_noise.formats.signals import image_data, pick_image
from em_noise.formats.units import length_to_A

_CODEC_HINT = "needs the imagecodecs package: pip install 'em-noise[formats]'"
_MAX_TAG_PIXEL_A = 1e6  # resolution tags giving pixels over 100 µm are display defaults (72 dpi), not scales


class _ErrorLog(logging.Handler):
    """Collects ERROR records: tifffile logs (rather than raises) on truncated files."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def read_tiff(path: Path, signal: str | None = None):
    """Data, pixel size (Å), metadata and header of the image in a TIFF (the calibrated grayscale series)."""
    import tifffile

    log = logging.getLogger("tifffile")
    errors = _ErrorLog()
    log.addHandler(errors)
    try:
        try:
            return _read(path, tifffile, errors, signal)
        except ValueError as exc:
            if "imagecodecs" in str(exc):
                raise EMInputError(path, f"compressed TIFF {_CODEC_HINT}") from exc
            raise
    finally:
        log.removeHandler(errors)


def _read(path: Path, tifffile, errors: _ErrorLog, signal: str | None):
    try:
        from rsciio.tiff import file_reader
    except ImportError:
        file_reader = None
    size = path.stat().st_size
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise EMInputError(path, "TIFF holds no image")
        for series in tif.series:
            for page in series.pages:
                if page is None or any(o + n > size for o, n in zip(page.dataoffsets, page.databytecounts)):
                    raise EMInputError(path, "TIFF image data extends past the end of the file (truncated?)")
        ij = tif.imagej_metadata or {}
        description = tif.pages[0].description
        tag_pixel = _pixel_from_tags(tif.pages[0], ij)
        meta: dict[str, Any] = {}
        if ij:
            meta["imagej"] = {k: v for k, v in ij.items() if isinstance(v, (int, float, str)) and k != "provenance"}
        provenance = prov.from_json(ij.get("provenance")) or _described_provenance(description)
        if provenance:
            meta["provenance"] = provenance
        header = {"description": description, "imagej": dict(ij) if ij else None}
        if file_reader is None:
            raw, pixel_size_A = _read_tifffile(path, tif, signal), tag_pixel
            meta["reader"] = "tifffile"
    if file_reader is not None:
        raw, pixel_size_A = _read_rsciio(path, file_reader, signal, tag_pixel, meta)
    if errors.messages:
        raise EMInputError(path, f"cannot read as tif (truncated or corrupt?): {errors.messages[0]}")
    return raw, pixel_size_A, meta, header


def _read_rsciio(path: Path, file_reader, signal: str | None, tag_pixel: float | None, meta: dict):
    """The image series rosettasciio finds, with the scale it reads from the vendor's tags."""
    chosen, found = pick_image(path, file_reader(str(path)), signal)
    pixel_size_A = chosen.pixel_size_A
    if pixel_size_A is None and chosen.index == 0:
        pixel_size_A = tag_pixel  # ImageJ units other than 'micron', centimetre resolution tags
    meta["reader"] = "rosettasciio"
    if chosen.tilt_angles_deg is not None:
        meta["tilt_angles_deg"] = chosen.tilt_angles_deg
    if len(found) > 1:
        meta["signals"] = [s.describe() for s in found]
        meta["signal_index"] = chosen.index
    return image_data(path, chosen), pixel_size_A


def _described_provenance(description: str) -> dict | None:
    """Provenance from a JSON description (``{"provenance": {...}, ...}``) written by other tools."""
    value = (prov.from_json(description) or {}).get("provenance")
    return value if isinstance(value, dict) else None


def _read_tifffile(path: Path, tif, signal: str | None) -> np.ndarray:
    """Without rosettasciio: the first grayscale series (an RGB one only if its channels agree)."""
    if signal is not None:
        raise EMInputError(path, "choosing a TIFF signal by title needs rosettasciio: pip install 'em-noise[formats]'")
    rgb_first = None
    for series in tif.series:
        is_rgb = series.ndim >= 3 and series.shape[-1] in (3, 4) and series.axes.endswith("S")
        if not is_rgb:
            return series.asarray()
        rgb_first = series if rgb_first is None else rgb_first
    raw = rgb_first.asarray()[..., :3]
    if not (np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 0], raw[..., 2])):
        raise EMInputError(path, "colour image; EM data must be single-channel (grayscale)")
    return raw[..., 0]


def _pixel_from_tags(page, ij: dict) -> float | None:
    """Pixel size (Å) from resolution tags: in the ImageJ unit when there is one, else in centimetres."""
    xres = page.tags.get("XResolution")
    runit = page.tags.get("ResolutionUnit")
    if xres is None:
        return None
    num, den = xres.value
    ppu = num / den if den else None  # pixels per unit
    if not ppu:
        return None
    px = None
    unit_A = length_to_A(ij.get("unit")) if ij else None
    if unit_A is not None:
        px = unit_A / ppu
    elif runit is not None and int(runit.value) == 3:  # centimetre
        px = 1e8 / ppu
    return px if px is not None and 0 < px < _MAX_TAG_PIXEL_A else None


def write_tiff(tmp: Path, arr: np.ndarray, pixel_size_A: float | None, provenance: dict | None = None,
               volume: bool | None = None) -> None:
    """ImageJ TIFF (float32 unless uint8/uint16): scale in µm per pixel, provenance JSON in the description."""
    import tifffile

    arr = np.ascontiguousarray(arr, dtype=np.float32) if arr.dtype not in (np.uint8, np.uint16) else arr
    metadata: dict[str, Any] = {"axes": "ZYX" if arr.ndim == 3 else "YX"}
    kwargs: dict[str, Any] = {"imagej": True, "metadata": metadata}
    if pixel_size_A:
        ppu = 1e4 / float(pixel_size_A)  # pixels per µm
        kwargs["resolution"] = (ppu, ppu)
        metadata["unit"] = "micron"
        if arr.ndim == 3 and volume:
            metadata["spacing"] = float(pixel_size_A) / 1e4
    if provenance:
        metadata["provenance"] = prov.to_json(provenance)
    tifffile.imwrite(tmp, arr, **kwargs)
