"""Read and write EM images and stacks, keeping pixel size and headers.

Formats: TIFF (tifffile), MRC family (mrcfile), PNG (Pillow), NumPy ``.npy``; Gatan DM3/DM4, Velox/Berkeley EMD
and TIA SER through rosettasciio (optional extra ``em-noise[formats]``). Pixel sizes are in Å.
Every problem with an input file raises :class:`~em_noise.errors.EMInputError` with a one-line message.
"""
from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from em_noise.errors import EMInputError

MRC_EXTENSIONS = (".mrc", ".mrcs", ".st", ".ali", ".rec", ".map")
TIFF_EXTENSIONS = (".tif", ".tiff")
RSCIIO_EXTENSIONS = (".dm3", ".dm4", ".emd", ".ser")
READ_EXTENSIONS = TIFF_EXTENSIONS + MRC_EXTENSIONS + RSCIIO_EXTENSIONS + (".png", ".npy")
WRITE_EXTENSIONS = TIFF_EXTENSIONS + MRC_EXTENSIONS + (".png", ".npy")

# Integers above this magnitude are not exactly representable in float32.
FLOAT32_EXACT_INT = 2**24

# Length unit -> Å.
_UNIT_TO_A = {
    "a": 1.0, "å": 1.0, "angstrom": 1.0, "ang": 1.0, "\u212b": 1.0,
    "nm": 10.0, "nanometer": 10.0,
    "um": 1e4, "µm": 1e4, "μm": 1e4, "micron": 1e4, "microns": 1e4, "\\u00b5m": 1e4,
    "pm": 0.01, "mm": 1e7, "m": 1e10,
}


@dataclass
class EMImage:
    """An image (Y, X) or stack (N, Y, X) as float32 with its pixel size in Å and source header."""

    data: np.ndarray
    pixel_size_A: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    header: Any = None
    path: Path | None = None

    @property
    def is_stack(self) -> bool:
        return self.data.ndim == 3

    @property
    def tilt_angles_deg(self) -> list[float] | None:
        return self.metadata.get("tilt_angles_deg")


# ----------------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike) -> EMImage:
    """Read an EM image or stack; pixel size in Å (None when the file carries none)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in READ_EXTENSIONS:
        raise EMInputError(path, f"unknown file extension {path.suffix or '(none)'!r}; supported: {' '.join(READ_EXTENSIONS)}")
    if not path.exists():
        raise EMInputError(path, "no such file")
    if path.is_dir():
        raise EMInputError(path, "is a directory, not an image file")
    if path.stat().st_size == 0:
        raise EMInputError(path, "file is empty")
    reader: Callable[[Path], tuple[np.ndarray, float | None, dict, Any]]
    if ext in TIFF_EXTENSIONS:
        reader, fmt = _read_tiff, "tif"
    elif ext in MRC_EXTENSIONS:
        reader, fmt = _read_mrc, "mrc"
    elif ext == ".png":
        reader, fmt = _read_png, "png"
    elif ext == ".npy":
        reader, fmt = _read_npy, "npy"
    else:
        reader, fmt = _read_rsciio, ext[1:]
    try:
        raw, pixel_size_A, meta, header = reader(path)
    except EMInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any library failure is a bad file for the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EMInputError(path, f"cannot read as {fmt} (truncated or corrupt?): {reason}") from exc
    data = _to_float32(path, raw)
    meta = {"format": fmt, "dtype": str(np.asarray(raw).dtype), "tilt_angles_deg": None, **meta}
    if pixel_size_A is not None and not (np.isfinite(pixel_size_A) and pixel_size_A > 0):
        pixel_size_A = None
    return EMImage(data=data, pixel_size_A=pixel_size_A, metadata=meta, header=header, path=path)


def _to_float32(path: Path, raw: Any) -> np.ndarray:
    """Validate shape and values and convert to float32."""
    arr = np.asarray(raw)
    if arr.dtype.kind == "c":
        raise EMInputError(path, f"complex data ({arr.dtype}) is not an image")
    if arr.dtype.kind not in "biuf":
        raise EMInputError(path, f"unsupported data type {arr.dtype}")
    arr = np.squeeze(arr) if arr.ndim > 3 else arr
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.size == 0:
        raise EMInputError(path, f"empty image (shape {arr.shape})")
    if arr.ndim not in (2, 3):
        raise EMInputError(path, f"expected a 2-D image or 3-D stack, got {arr.ndim}-D data of shape {arr.shape}")
    if min(arr.shape[-2:]) < 2:
        raise EMInputError(path, f"image too small (shape {arr.shape})")
    if arr.dtype.kind in "iu":
        big = max(abs(int(arr.min())), abs(int(arr.max())))
        if big > FLOAT32_EXACT_INT:
            raise EMInputError(path, f"integer values up to {big} overflow float32's exact range (2^24)")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(out)):
        n_bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
        raise EMInputError(path, f"{n_bad} non-finite values (NaN or Inf)")
    return out


def _unit_scale(unit: Any) -> float | None:
    if unit is None:
        return None
    if isinstance(unit, bytes):
        unit = unit.decode("latin-1", "ignore")
    u = str(unit).strip().lower().replace("\\u00c5", "å")
    return _UNIT_TO_A.get(u)


class _ErrorLog(logging.Handler):
    """Collects ERROR records: tifffile logs (rather than raises) on truncated files."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _read_tiff(path: Path):
    import tifffile

    log = logging.getLogger("tifffile")
    errors = _ErrorLog()
    log.addHandler(errors)
    try:
        return _read_tiff_checked(path, tifffile, errors)
    finally:
        log.removeHandler(errors)


def _read_tiff_checked(path: Path, tifffile, errors: _ErrorLog):
    size = path.stat().st_size
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise EMInputError(path, "TIFF holds no image")
        series = tif.series[0]
        for page in series.pages:
            if page is None or any(o + n > size for o, n in zip(page.dataoffsets, page.databytecounts)):
                raise EMInputError(path, "TIFF image data extends past the end of the file (truncated?)")
        raw = series.asarray()
        if errors.messages:
            raise EMInputError(path, f"cannot read as tif (truncated or corrupt?): {errors.messages[0]}")
        # colour TIFF (Y, X, 3/4): take luminance only if all channels agree
        if raw.ndim == 3 and raw.shape[-1] in (3, 4) and series.axes.endswith("S"):
            raw = _gray_from_rgb(path, raw)
        page = tif.pages[0]
        meta: dict[str, Any] = {}
        pixel_size_A = None
        ij = tif.imagej_metadata or {}
        tags = page.tags
        xres = tags.get("XResolution")
        runit = tags.get("ResolutionUnit")
        ppu = None
        if xres is not None:
            num, den = xres.value
            ppu = num / den if den else None  # pixels per unit
        if ppu:
            unit_scale = _unit_scale(ij.get("unit")) if ij else None
            if unit_scale is not None:
                pixel_size_A = unit_scale / ppu
            elif runit is not None and int(runit.value) == 3:  # centimetre
                pixel_size_A = 1e8 / ppu
        if ij:
            meta["imagej"] = {k: v for k, v in ij.items() if isinstance(v, (int, float, str))}
        desc = page.description if hasattr(page, "description") else ""
        header = {"description": desc, "imagej": dict(ij) if ij else None}
    return raw, pixel_size_A, meta, header


def _gray_from_rgb(path: Path, rgb: np.ndarray) -> np.ndarray:
    c = rgb[..., :3]
    if not (np.array_equal(c[..., 0], c[..., 1]) and np.array_equal(c[..., 0], c[..., 2])):
        raise EMInputError(path, "colour image; EM data must be single-channel (grayscale)")
    return c[..., 0]


def _read_png(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGB", "RGBA", "LA", "P"):
            raw = _gray_from_rgb(path, np.asarray(im.convert("RGB")))
        elif im.mode in ("L", "I;16", "I;16B", "I", "F", "1"):
            raw = np.asarray(im)
        else:
            raise EMInputError(path, f"unsupported PNG mode {im.mode}")
    return raw, None, {}, None


def _read_npy(path: Path):
    raw = np.load(path, allow_pickle=False)
    return raw, None, {}, None


def _read_mrc(path: Path):
    import warnings

    import mrcfile

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mrcfile.open(path, mode="r", permissive=True) as mrc:
            if mrc.data is None:
                reason = "; ".join(str(w.message) for w in caught) or "no data block"
                raise EMInputError(path, f"cannot read as mrc (truncated or corrupt?): {reason}")
            raw = np.array(mrc.data)
            expected = int(mrc.header.nx) * int(mrc.header.ny) * max(int(mrc.header.nz), 1)
            if raw.size != expected:
                raise EMInputError(path, f"data size {raw.size} does not match header {expected} (truncated?)")
            header = mrc.header.copy()
            ext = None if mrc.extended_header is None or len(mrc.extended_header) == 0 else mrc.extended_header.copy()
            vx = float(mrc.voxel_size.x)
            pixel_size_A = vx if vx > 0 else None
            meta: dict[str, Any] = {"mrc_ispg": int(header.ispg)}
            tilts, fei_px = _fei_extended(mrc, raw.shape[0] if raw.ndim == 3 else 1)
    if tilts is not None:
        meta["tilt_angles_deg"] = tilts
    if pixel_size_A is None and fei_px is not None:
        pixel_size_A = fei_px
    return raw, pixel_size_A, meta, {"header": header, "extended_header": ext}


def _fei_extended(mrc, n_sections: int) -> tuple[list[float] | None, float | None]:
    """Tilt angles (degrees) and pixel size (Å) from an FEI extended header, if there is one."""
    hdr = mrc.header
    exttyp = bytes(hdr.exttyp).strip(b"\x00 ")
    tilts = px = None
    if exttyp in (b"FEI1", b"FEI2"):
        ind = mrc.indexed_extended_header
        if ind is not None and len(ind) >= n_sections:
            names = ind.dtype.names or ()
            if "Alpha tilt" in names:
                tilts = [float(a) for a in ind["Alpha tilt"][:n_sections]]
            if "Pixel size X" in names:
                px = float(ind["Pixel size X"][0]) * 1e10
    else:
        ext = mrc.extended_header
        nbytes = 0 if ext is None else len(ext.tobytes())
        # Old FEI (no exttyp): 128 float32 per section; [0] alpha tilt (deg), [11] pixel size (m).
        if nbytes >= n_sections * 512 and nbytes % 512 == 0 and n_sections > 0:
            big_endian = hdr.dtype.fields["nx"][0].byteorder == ">"
            rec = np.frombuffer(ext.tobytes(), dtype=">f4" if big_endian else "<f4").reshape(-1, 128)
            rec = rec[:n_sections]
            t = rec[:, 0].astype(float)
            p = float(rec[0, 11])
            if np.all(np.isfinite(t)) and np.all(np.abs(t) < 90) and np.any(t != 0):
                tilts = [float(a) for a in t]
            if np.isfinite(p) and 1e-13 < p < 1e-6:
                px = p * 1e10
    if px is not None:
        px = float(f"{px:.6g}") if np.isfinite(px) and px > 0 else None  # float32 record: 6 significant digits
    return tilts, px


def _read_rsciio(path: Path):
    ext = path.suffix.lower()
    try:
        if ext in (".dm3", ".dm4"):
            from rsciio.digitalmicrograph import file_reader
        elif ext == ".emd":
            from rsciio.emd import file_reader
        else:
            from rsciio.tia import file_reader
    except ImportError:
        raise EMInputError(path, f"reading {ext} files needs the optional extra: pip install 'em-noise[formats]'") from None
    signals = file_reader(str(path))
    images = [s for s in signals if np.asarray(s["data"]).ndim >= 2]
    if not images:
        raise EMInputError(path, "file holds no image signal")
    sig = images[0]
    pixel_size_A = None
    axes = [a for a in sig.get("axes", []) if not a.get("navigate", False)]
    if axes:
        scale = _unit_scale(axes[-1].get("units"))
        if scale is not None:
            pixel_size_A = float(axes[-1].get("scale", 0)) * scale
    meta = {"signal_title": str(sig.get("metadata", {}).get("General", {}).get("title", ""))}
    return sig["data"], pixel_size_A, meta, {"original_metadata": sig.get("original_metadata")}


# ----------------------------------------------------------------------------------------------- writing


def output_path(input_path: str | os.PathLike, suffix: str, out_dir: str | os.PathLike | None = None,
                ext: str | None = None) -> Path:
    """``<dir>/<stem>.<suffix>.<ext>``: next to the input, or in ``out_dir`` (created if missing)."""
    p = Path(input_path)
    ext = ext or p.suffix
    if not ext.startswith("."):
        ext = "." + ext
    folder = p.parent if out_dir is None else Path(out_dir)
    if out_dir is not None:
        if folder.exists() and not folder.is_dir():
            raise EMInputError(folder, "output path exists and is not a directory")
        folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{p.stem}.{suffix}{ext}"


def check_writable(path: str | os.PathLike, *, like: EMImage | None = None, overwrite: bool = False) -> Path:
    """Raise unless ``path`` may be written: never the input file, an existing file only with ``overwrite``."""
    path = Path(path)
    if like is not None and like.path is not None and Path(like.path).exists() and path.exists():
        if os.path.samefile(path, like.path):
            raise EMInputError(path, "refusing to overwrite the input file")
    if path.exists() and not overwrite:
        raise EMInputError(path, "output exists (use --overwrite to replace it)")
    if path.exists() and path.is_dir():
        raise EMInputError(path, "output is a directory")
    if not path.parent.exists():
        raise EMInputError(path, f"output directory {path.parent} does not exist")
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = False,
                 like: EMImage | None = None) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` and rename it into place; no partial file on failure."""
    path = check_writable(path, like=like, overwrite=overwrite)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str, *, like: EMImage | None = None, overwrite: bool = False) -> Path:
    """Write a text file (JSON report, CSV table, parameters) atomically, under the same rules as images."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite, like=like)


def write_image(path: str | os.PathLike, data: np.ndarray, *, pixel_size_A: float | None = None,
                like: EMImage | None = None, overwrite: bool = False, volume: bool | None = None) -> Path:
    """Write ``data`` (Y, X) or (N|Z, Y, X) atomically, keeping pixel size (Å) and, for MRC, ``like``'s header.

    ``pixel_size_A`` defaults to ``like.pixel_size_A``. ``volume``: for 3-D MRC output, mark it as a volume
    (True) or an image stack (False); default: as ``like`` or a volume when unknown.
    """
    path = Path(path)
    arr = np.asarray(data)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise EMInputError(path, f"can only write a non-empty 2-D image or 3-D stack, got shape {arr.shape}")
    if pixel_size_A is None and like is not None:
        pixel_size_A = like.pixel_size_A
    ext = path.suffix.lower()
    if ext in TIFF_EXTENSIONS:
        writer = lambda tmp: _write_tiff(tmp, arr, pixel_size_A)  # noqa: E731
    elif ext in MRC_EXTENSIONS:
        writer = lambda tmp: _write_mrc(tmp, arr, pixel_size_A, like, volume)  # noqa: E731
    elif ext == ".png":
        writer = lambda tmp: _write_png(tmp, arr)  # noqa: E731
    elif ext == ".npy":
        writer = lambda tmp: _write_npy(tmp, arr)  # noqa: E731
    else:
        raise EMInputError(path, f"cannot write extension {path.suffix or '(none)'!r}; supported: {' '.join(WRITE_EXTENSIONS)}")
    return atomic_write(path, writer, overwrite=overwrite, like=like)


def _write_tiff(tmp: Path, arr: np.ndarray, pixel_size_A: float | None) -> None:
    import tifffile

    arr = np.ascontiguousarray(arr, dtype=np.float32) if arr.dtype not in (np.uint8, np.uint16) else arr
    kwargs: dict[str, Any] = {"imagej": True, "metadata": {"axes": "ZYX" if arr.ndim == 3 else "YX"}}
    if pixel_size_A:
        ppnm = 10.0 / pixel_size_A  # pixels per nm
        kwargs["resolution"] = (ppnm, ppnm)
        kwargs["metadata"]["unit"] = "nm"
    tifffile.imwrite(tmp, arr, **kwargs)


def _write_npy(tmp: Path, arr: np.ndarray) -> None:
    with open(tmp, "wb") as fh:
        np.save(fh, np.asarray(arr, dtype=np.float32), allow_pickle=False)


def _write_png(tmp: Path, arr: np.ndarray) -> None:
    from PIL import Image

    if arr.ndim != 2:
        raise EMInputError(tmp, "PNG holds a single 2-D image, not a stack")
    Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L").save(tmp, format="PNG")


# MRC header fields that describe the data block itself and so are never copied from another file.
_MRC_DATA_FIELDS = {"nx", "ny", "nz", "mode", "mx", "my", "mz", "cella", "dmin", "dmax", "dmean", "rms",
                    "nsymbt", "exttyp", "nversion", "map", "machst", "mapc", "mapr", "maps", "ispg", "nlabl", "label"}


def _write_mrc(tmp: Path, arr: np.ndarray, pixel_size_A: float | None, like: EMImage | None,
               volume: bool | None) -> None:
    import mrcfile

    src = like.header if (like is not None and isinstance(like.header, dict) and "header" in like.header) else None
    with mrcfile.new(tmp, overwrite=True) as mrc:
        if src is not None and src.get("extended_header") is not None and arr.ndim == 3 \
                and like is not None and like.data.ndim == 3 and like.data.shape[0] == arr.shape[0]:
            mrc.set_extended_header(copy.deepcopy(src["extended_header"]))
            mrc.header.exttyp = src["header"].exttyp
        mrc.set_data(np.ascontiguousarray(arr, dtype=np.float32))
        if src is not None:
            h = src["header"]
            for name in h.dtype.names:
                if name not in _MRC_DATA_FIELDS:
                    mrc.header[name] = h[name]
            labels = [bytes(h.label[i]).rstrip(b"\x00 ") for i in range(int(h.nlabl))]
            for i, lab in enumerate(labels[:9]):
                mrc.header.label[i] = lab
            mrc.header.nlabl = len(labels[:9])
        if arr.ndim == 3:
            is_volume = volume if volume is not None else not (like is not None and like.metadata.get("mrc_ispg") == 0)
            if is_volume:
                mrc.set_volume()
            else:
                mrc.set_image_stack()
        if pixel_size_A:
            mrc.voxel_size = float(pixel_size_A)
        mrc.update_header_stats()
