"""Tilt angles and pixel size from MRC extended headers, with the record size each layout declares.

Layouts: FEI1/FEI2 (Thermo MRC2014: every record starts with its own size, 'Metadata size'), the older
FEI/Agard layout (``nint`` integers and ``nreal`` floats per section, FEI writes 0 and 32: 128-byte records of
alpha tilt (degrees) ... pixel size (m) at float 11), and SerialEM (``nint`` bytes per section, tilt x 100
as the first int16 when bit 1 of ``nreal`` is set).
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass

import numpy as np

# Header byte offsets (MRC2014 / IMOD): extended header type and the per-section record description.
_EXTTYP = slice(104, 108)
_NINT_NREAL = slice(128, 132)
_FEI_OLD_TILT, _FEI_OLD_PIXEL = 0, 11  # float indices in an FEI/Agard record
_SERIALEM_FLAG_BYTES = {1: 2, 2: 6, 4: 4, 8: 2, 16: 2, 32: 4}
_MAX_PIXEL_M = 1e-4  # 100 µm: larger "pixel sizes" in a record are not calibrations


@dataclass
class ExtendedHeader:
    """What the extended header says: layout name, one tilt per section (degrees), pixel size (Å)."""

    layout: str
    record_bytes: int
    tilt_angles_deg: list[float] | None = None
    pixel_size_A: float | None = None


def read_extended_header(header: np.ndarray, ext: bytes, n_sections: int) -> ExtendedHeader | None:
    """Parse ``ext`` (the extended header bytes) as the layout the main ``header`` declares; None if unknown."""
    if not ext or n_sections < 1:
        return None
    raw = np.asarray(header).tobytes()
    order = _byte_order(header)
    exttyp = raw[_EXTTYP].strip(b"\x00 ")
    nint, nreal = struct.unpack(order + "hh", raw[_NINT_NREAL])
    if exttyp in (b"FEI1", b"FEI2"):
        return _fei_mrc2014(ext, exttyp, order, n_sections)
    if exttyp == b"SERI" or (exttyp == b"" and nint > 0 and _serialem_bytes(nreal) == nint):
        return _serialem(ext, order, n_sections, nint, nreal)
    if exttyp not in (b"", b"AGAR"):
        return None
    if nint == 0 and nreal > 0:
        return _fei_old(ext, order, n_sections, 4 * nreal, f"FEI/Agard ({4 * nreal}-byte records)")
    if nint == 0 and nreal == 0:  # record size not declared: FEI wrote 1024 records, or one per section
        for n_rec in (1024, n_sections):
            size = len(ext) // n_rec
            if len(ext) % n_rec == 0 and size % 4 == 0 and size >= 4 * (_FEI_OLD_PIXEL + 1):
                found = _fei_old(ext, order, n_sections, size, f"FEI, undeclared ({size}-byte records)")
                if found is not None and found.tilt_angles_deg is not None:
                    return found
    return None


def _byte_order(header: np.ndarray) -> str:
    bo = np.asarray(header).dtype.fields["nx"][0].byteorder
    if bo in ("=", "|"):
        return "<" if sys.byteorder == "little" else ">"
    return bo


def _plausible_tilts(t: np.ndarray) -> list[float] | None:
    """Tilts in degrees if they can be a tilt series' angles: finite, within ±90°, not all one value."""
    t = np.asarray(t, dtype=np.float64)
    if t.size == 0 or not np.all(np.isfinite(t)) or np.any(np.abs(t) > 90):
        return None
    if t.size > 1 and np.all(t == t[0]):
        return None
    return [float(a) for a in t]


def _pixel_A(p: float, float32: bool) -> float | None:
    """Pixel size in Å from metres; float32 records carry 6 significant digits."""
    p = float(p)
    if not (np.isfinite(p) and 1e-13 < p < _MAX_PIXEL_M):
        return None
    a = p * 1e10
    return float(f"{a:.6g}") if float32 else a


def _fei_mrc2014(ext: bytes, exttyp: bytes, order: str, n: int) -> ExtendedHeader | None:
    """FEI1/FEI2: each record declares its size; read the spec's fields that fit in that size."""
    from mrcfile.dtypes import get_ext_header_dtype

    size = None
    for o in (order, ">" if order == "<" else "<"):
        s = struct.unpack(o + "i", ext[:4])[0] if len(ext) >= 4 else 0
        if 8 <= s <= len(ext):
            size, order = s, o
            break
    if size is None:
        return None
    spec = get_ext_header_dtype(exttyp, order)
    names = [k for k in spec.names if spec.fields[k][1] + spec.fields[k][0].itemsize <= size]
    dt = np.dtype({"names": names, "formats": [spec.fields[k][0] for k in names],
                   "offsets": [spec.fields[k][1] for k in names], "itemsize": size})
    rec = np.frombuffer(ext, dtype=dt, count=min(n, len(ext) // size))
    out = ExtendedHeader(f"{exttyp.decode()} ({size}-byte records)", size)
    if "Alpha tilt" in names and len(rec) == n:
        out.tilt_angles_deg = _plausible_tilts(rec["Alpha tilt"])
    if "Pixel size X" in names and len(rec):
        out.pixel_size_A = _pixel_A(rec["Pixel size X"][0], float32=False)
    return out


def _fei_old(ext: bytes, order: str, n: int, size: int, layout: str) -> ExtendedHeader | None:
    """FEI/Agard floats: alpha tilt (degrees) at float 0, pixel size (m) at float 11 of each record."""
    if size < 4 or len(ext) < size:
        return None
    floats = size // 4
    rec = np.frombuffer(ext, dtype=order + "f4", count=(len(ext) // size) * floats).reshape(-1, floats)
    out = ExtendedHeader(layout, size)
    if len(rec) >= n:
        out.tilt_angles_deg = _plausible_tilts(rec[:n, _FEI_OLD_TILT])
    if floats > _FEI_OLD_PIXEL:
        out.pixel_size_A = _pixel_A(rec[0, _FEI_OLD_PIXEL], float32=True)
    return out


def _serialem_bytes(flags: int) -> int | None:
    """Bytes per section implied by SerialEM flags, or None if a flag is not one this reader knows."""
    if flags <= 0 or flags & ~sum(_SERIALEM_FLAG_BYTES):
        return None
    return sum(b for bit, b in _SERIALEM_FLAG_BYTES.items() if flags & bit)


def _serialem(ext: bytes, order: str, n: int, nint: int, flags: int) -> ExtendedHeader | None:
    """SerialEM: ``nint`` bytes per section; the first int16 is the tilt angle x 100 when flag 1 is set."""
    if nint < 2:
        return None
    out = ExtendedHeader(f"SerialEM ({nint}-byte records)", nint)
    if flags & 1 and len(ext) >= n * nint:
        rec = np.frombuffer(ext, dtype=np.uint8, count=n * nint).reshape(n, nint)
        tilt = rec[:, :2].copy().view(order + "i2")[:, 0] / 100.0
        out.tilt_angles_deg = _plausible_tilts(tilt)
    return out
