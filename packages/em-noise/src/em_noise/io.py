"""Read and write EM images and stacks, keeping pixel size and headers.

Formats: TIFF (rosettasciio for vendor tags, else tifffile), MRC family (mrcfile, FEI/SerialEM extended
headers), PNG (Pillow, 8/16-bit), NumPy ``.npy``; Gatan DM3/DM4, Velox/Berkeley EMD and TIA SER through
rosettasciio (optional extra ``em-noise[formats]``). Pixel sizes are in Å.
Every problem with an input file raises :class:`~em_noise.errors.EMInputError` with a one-line message.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from em_noise import outputs
from em_noise.errors import EMInputError
from em_noise.formats import provenance as prov
from em_noise.formats.mrc import read_mrc, write_mrc
from em_noise.formats.signals import read_vendor
from em_noise.formats.tiff import read_tiff, write_tiff

MRC_EXTENSIONS = (".mrc", ".mrcs", ".st", ".ali", ".rec", ".map")
TIFF_EXTENSIONS = (".tif", ".tiff")
RSCIIO_EXTENSIONS = (".dm3", ".dm4", ".emd", ".ser", ".hspy", ".hdf5")
READ_EXTENSIONS = TIFF_EXTENSIONS + MRC_EXTENSIONS + RSCIIO_EXTENSIONS + (".png", ".npy")
WRITE_EXTENSIONS = TIFF_EXTENSIONS + MRC_EXTENSIONS + (".png", ".npy")

# Integers above this magnitude are not exactly representable in float32.
FLOAT32_EXACT_INT = 2**24


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

    @property
    def provenance(self) -> dict[str, Any] | None:
        """What made this file (model, version, tiling, ...), as written by :func:`write_image`."""
        return self.metadata.get("provenance")


# ----------------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike, *, signal: str | None = None) -> EMImage:
    """Read an EM image or stack; pixel size in Å (None when the file carries none).

    Multi-signal files (Velox EMD, DM, SER, multi-series TIFF) give their image signal: the one titled
    ``signal`` if given, else HAADF, ADF, DF, BF in that order, else the first calibrated grayscale one.
    Spectrum images, spectra and diffraction patterns are refused.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in READ_EXTENSIONS:
        raise EMInputError(path, f"unknown file extension {path.suffix or '(none)'!r}; "
                                 f"supported: {' '.join(READ_EXTENSIONS)}")
    if not path.exists():
        raise EMInputError(path, "no such file")
    if path.is_dir():
        raise EMInputError(path, "is a directory, not an image file")
    if path.stat().st_size == 0:
        raise EMInputError(path, "file is empty")
    reader: Callable[[Path], tuple[np.ndarray, float | None, dict, Any]]
    if ext in TIFF_EXTENSIONS:
        reader, fmt = (lambda p: read_tiff(p, signal)), "tif"
    elif ext in MRC_EXTENSIONS:
        reader, fmt = read_mrc, "mrc"
    elif ext == ".png":
        reader, fmt = _read_png, "png"
    elif ext == ".npy":
        reader, fmt = _read_npy, "npy"
    else:
        reader, fmt = (lambda p: read_vendor(p, signal)), ext[1:]
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


def _gray_from_rgb(path: Path, rgb: np.ndarray) -> np.ndarray:
    c = rgb[..., :3]
    if not (np.array_equal(c[..., 0], c[..., 1]) and np.array_equal(c[..., 0], c[..., 2])):
        raise EMInputError(path, "colour image; EM data must be single-channel (grayscale)")
    return c[..., 0]


def _read_png(path: Path):
    from PIL import Image

    with open(path, "rb") as fh:
        ihdr = fh.read(26)
    bit_depth, colour_type = (ihdr[24], ihdr[25]) if len(ihdr) == 26 and ihdr[12:16] == b"IHDR" else (8, 0)
    with Image.open(path) as im:
        im.load()
        text = dict(getattr(im, "text", {}) or {})
        if bit_depth == 16 and colour_type in (2, 4, 6):  # Pillow keeps 8 of the 16 bits of colour PNGs
            raw = _gray_from_rgb(path, _png16_colour(path))
        elif im.mode in ("RGB", "RGBA", "LA", "P"):
            raw = _gray_from_rgb(path, np.asarray(im.convert("RGB")))
        elif im.mode in ("L", "I;16", "I;16B", "I;16L", "I", "F", "1"):
            raw = np.asarray(im)
        else:
            raise EMInputError(path, f"unsupported PNG mode {im.mode}")
    meta: dict[str, Any] = {}
    provenance = prov.from_json(text.get("provenance"))
    if provenance:
        meta["provenance"] = provenance
    return raw, None, meta, None


def _png16_colour(path: Path) -> np.ndarray:
    """A 16-bit colour PNG at full depth (imagecodecs), as (Y, X, channels)."""
    try:
        import imagecodecs
    except ImportError:
        raise EMInputError(path, "16-bit colour PNG needs imagecodecs: pip install 'em-noise[formats]'") from None
    arr = np.asarray(imagecodecs.png_decode(path.read_bytes()))
    return np.repeat(arr[..., :1], 3, axis=-1) if arr.shape[-1] == 2 else arr  # gray + alpha


def _read_npy(path: Path):
    raw = np.load(path, allow_pickle=False)
    return raw, None, {}, None


# ----------------------------------------------------------------------------------------------- writing


def output_path(input_path: str | os.PathLike, suffix: str, out_dir: str | os.PathLike | None = None,
                ext: str | None = None) -> Path:
    """``<dir>/<stem>.<suffix>.<ext>``: next to the input, or in ``out_dir`` (made when the output is written)."""
    p = Path(input_path)
    ext = ext or p.suffix
    if not ext.startswith("."):
        ext = "." + ext
    folder = p.parent if out_dir is None else Path(out_dir)
    if out_dir is not None and folder.exists() and not folder.is_dir():
        raise EMInputError(folder, "output path exists and is not a directory")
    return folder / f"{p.stem}.{suffix}{ext}"


def check_writable(path: str | os.PathLike, *, like: EMImage | None = None, overwrite: bool = False,
                   inputs: Sequence[str | os.PathLike | None] = ()) -> Path:
    """Raise unless ``path`` may be written: never an input (``like``'s file, ``inputs``), an existing file only
    with ``overwrite`` (:func:`em_noise.outputs.check_output`)."""
    return outputs.check_output(path, overwrite=overwrite, inputs=[like.path if like is not None else None, *inputs])


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = False,
                 like: EMImage | None = None) -> Path:
    """Call ``write(tmp)`` on a temp file beside ``path`` and rename it into place (at the end of the active
    :class:`em_noise.outputs.OutputSet`, if any); no partial file on failure, never over ``like``'s file."""
    return outputs.atomic_write(path, write, overwrite=overwrite, inputs=[like.path if like is not None else None])


def write_text(path: str | os.PathLike, text: str, *, like: EMImage | None = None, overwrite: bool = False) -> Path:
    """Write a text file (JSON report, CSV table, parameters) atomically, under the same rules as images."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite, like=like)


def write_image(path: str | os.PathLike, data: np.ndarray, *, pixel_size_A: float | None = None,
                like: EMImage | None = None, overwrite: bool = False, volume: bool | None = None,
                provenance: dict[str, Any] | None = None) -> Path:
    """Write ``data`` (Y, X) or (N|Z, Y, X) atomically, keeping pixel size (Å) and, for MRC, ``like``'s header.

    ``pixel_size_A`` defaults to ``like.pixel_size_A``. ``volume``: for 3-D output, mark it as a volume
    (True) or an image stack (False); default: as ``like`` or a volume when unknown (MRC).
    ``provenance`` (model, version, tiling, ... as JSON-able values) goes into the TIFF description (JSON),
    the MRC labels (one ``provenance key=value`` label per item, 80 characters at most) or a PNG text chunk;
    :attr:`EMImage.provenance` reads it back. TIFF is float32 (uint8/uint16 data stays so), PNG 8-bit.
    """
    path = Path(path)
    arr = np.asarray(data)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise EMInputError(path, f"can only write a non-empty 2-D image or 3-D stack, got shape {arr.shape}")
    if pixel_size_A is None and like is not None:
        pixel_size_A = like.pixel_size_A
    if provenance is not None:
        prov.to_json(provenance)  # a bad provenance is the caller's error, raised before anything is written
    ext = path.suffix.lower()
    if ext in TIFF_EXTENSIONS:
        writer = lambda tmp: write_tiff(tmp, arr, pixel_size_A, provenance, volume)  # noqa: E731
    elif ext in MRC_EXTENSIONS:
        writer = lambda tmp: write_mrc(tmp, arr, pixel_size_A, like, volume, provenance)  # noqa: E731
    elif ext == ".png":
        writer = lambda tmp: _write_png(tmp, arr, provenance)  # noqa: E731
    elif ext == ".npy":
        writer = lambda tmp: _write_npy(tmp, arr)  # noqa: E731
    else:
        raise EMInputError(path, f"cannot write extension {path.suffix or '(none)'!r}; "
                                 f"supported: {' '.join(WRITE_EXTENSIONS)}")
    return atomic_write(path, writer, overwrite=overwrite, like=like)


def _write_npy(tmp: Path, arr: np.ndarray) -> None:
    with open(tmp, "wb") as fh:
        np.save(fh, np.asarray(arr, dtype=np.float32), allow_pickle=False)


def _write_png(tmp: Path, arr: np.ndarray, provenance: dict[str, Any] | None = None) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    if arr.ndim != 2:
        raise EMInputError(tmp, "PNG holds a single 2-D image, not a stack")
    info = PngInfo()
    if provenance:
        info.add_text("provenance", prov.to_json(provenance))
    Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L").save(tmp, format="PNG", pnginfo=info)
