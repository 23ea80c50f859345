"""MRC family (.mrc .mrcs .st .ali .rec .map): data, pixel size (Å), tilt angles, labels and provenance."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from em_noise.errors import EMInputError
from em_noise.formats import provenance as prov
from em_noise.formats.mrc_ext import read_extended_header

if TYPE_CHECKING:
    from em_noise.io import EMImage

# A main-header pixel size of exactly this is what writers put when they know none.
_PLACEHOLDER_A = 1.0

# Header fields that describe the data block itself and so are never copied from another file.
_DATA_FIELDS = {"nx", "ny", "nz", "mode", "mx", "my", "mz", "cella", "dmin", "dmax", "dmean", "rms",
                "nsymbt", "exttyp", "nversion", "map", "machst", "mapc", "mapr", "maps", "ispg", "nlabl", "label"}


def _labels(header: Any) -> list[bytes]:
    n = max(0, min(int(header.nlabl), prov.MRC_MAX_LABELS))
    return [bytes(header.label[i]).rstrip(b"\x00 ") for i in range(n)]


def read_mrc(path: Path):
    """Data, pixel size (Å), metadata (tilts, labels, provenance) and the header to copy to outputs."""
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
            has_ext = mrc.extended_header is not None and len(mrc.extended_header) > 0
            ext = mrc.extended_header.copy() if has_ext else None
            vx = float(mrc.voxel_size.x)
    labels = _labels(header)
    meta: dict[str, Any] = {"mrc_ispg": int(header.ispg),
                            "mrc_labels": [lab.decode("latin-1") for lab in labels]}
    provenance = prov.from_labels(labels)
    if provenance:
        meta["provenance"] = provenance
    pixel_size_A = vx if vx > 0 else None
    meta["pixel_size_source"] = "MRC header" if pixel_size_A else None
    n_sections = raw.shape[0] if raw.ndim == 3 else 1
    info = read_extended_header(header, b"" if ext is None else ext.tobytes(), n_sections)
    if info is not None:
        meta["extended_header"] = info.layout
        if info.tilt_angles_deg is not None:
            meta["tilt_angles_deg"] = info.tilt_angles_deg
        if info.pixel_size_A is not None and (pixel_size_A is None or abs(pixel_size_A - _PLACEHOLDER_A) < 1e-6):
            pixel_size_A = info.pixel_size_A
            meta["pixel_size_source"] = f"extended header, {info.layout}"
    return raw, pixel_size_A, meta, {"header": header, "extended_header": ext}


def write_mrc(tmp: Path, arr: np.ndarray, pixel_size_A: float | None, like: EMImage | None,
              volume: bool | None, provenance: dict | None = None) -> None:
    """Write float32 MRC; copy ``like``'s header (and its extended header when the sections match)."""
    import mrcfile

    src = like.header if (like is not None and isinstance(like.header, dict) and "header" in like.header) else None
    with mrcfile.new(tmp, overwrite=True) as mrc:
        if src is not None and src.get("extended_header") is not None and arr.ndim == 3 \
                and like is not None and like.data.ndim == 3 and like.data.shape[0] == arr.shape[0]:
            mrc.set_extended_header(copy.deepcopy(src["extended_header"]))
            mrc.header.exttyp = src["header"].exttyp
        mrc.set_data(np.ascontiguousarray(arr, dtype=np.float32))
        source_labels: list[bytes] = []
        if src is not None:
            h = src["header"]
            for name in h.dtype.names:
                if name not in _DATA_FIELDS:
                    mrc.header[name] = h[name]
            source_labels = _labels(h)
        labels = prov.merge_labels(source_labels, provenance)
        for i, lab in enumerate(labels):
            mrc.header.label[i] = lab
        mrc.header.nlabl = len(labels)
        if arr.ndim == 3:
            is_volume = volume if volume is not None else not (like is not None and like.metadata.get("mrc_ispg") == 0)
            if is_volume:
                mrc.set_volume()
            else:
                mrc.set_image_stack()
        if pixel_size_A:
            mrc.voxel_size = float(pixel_size_A)
        mrc.update_header_stats()
