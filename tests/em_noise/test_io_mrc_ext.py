"""MRC extended headers in the layouts microscopes write: FEI1/FEI2 records of the size they declare,
FEI/Agard 128-byte records (Xplore3D tilt series), SerialEM; tilt angles and pixel size read from them."""
from __future__ import annotations

import struct

import mrcfile
import numpy as np
import pytest
from em_noise.io import read_image, write_image

# Thermo/FEI MRC2014 extended header (FEI1, FEI2): byte offsets of the fields used here, little-endian.
FEI_METADATA_SIZE, FEI_METADATA_VERSION, FEI_BITMASK1 = 0, 4, 8
FEI_MICROSCOPE_TYPE, FEI_HT, FEI_ALPHA_TILT, FEI_BETA_TILT = 20, 84, 100, 108
FEI_PIXEL_SIZE_X, FEI_PIXEL_SIZE_Y = 156, 164
FEI1_RECORD, FEI2_RECORD = 768, 888


def _fei_record(size: int, version: int, tilt_deg: float, pixel_m: float) -> bytes:
    rec = bytearray(size)
    struct.pack_into("<iiI", rec, FEI_METADATA_SIZE, size, version, 0xFFFFFFFF)
    rec[FEI_MICROSCOPE_TYPE:FEI_MICROSCOPE_TYPE + 5] = b"TITAN"
    struct.pack_into("<d", rec, FEI_HT, 300e3)
    struct.pack_into("<dd", rec, FEI_ALPHA_TILT, tilt_deg, 0.0)
    struct.pack_into("<dd", rec, FEI_PIXEL_SIZE_X, pixel_m, pixel_m)
    return bytes(rec)


def _mrc(path, data, ext: bytes, *, exttyp: bytes = b"", voxel_A: float = 1.0, nint: int = 0, nreal: int = 0):
    """An MRC file as written by the microscope software: header pixel size, extended header, nint/nreal."""
    with mrcfile.new(path) as m:
        m.set_data(data)
        m.set_extended_header(np.frombuffer(ext, dtype="V1"))
        m.voxel_size = voxel_A
    raw = bytearray(path.read_bytes())
    raw[104:108] = exttyp.ljust(4, b"\x00")  # EXTTYPE
    struct.pack_into("<hh", raw, 128, nint, nreal)  # NINT, NREAL (IMOD/Agard header words)
    path.write_bytes(bytes(raw))
    return path


@pytest.fixture
def tilts() -> list[float]:
    return [-60.0, -30.0, 0.0, 30.0, 60.0]


@pytest.fixture
def stack5() -> np.ndarray:
    return np.random.default_rng(0).normal(100, 10, (5, 16, 24)).astype(np.float32)


@pytest.mark.parametrize(("exttyp", "size", "version"), [
    (b"FEI1", FEI1_RECORD, 1),
    (b"FEI2", FEI2_RECORD, 2),
    (b"FEI1", 1024, 1),          # records larger than the spec's fields (padding): the declared size counts
    (b"FEI2", FEI1_RECORD, 2),   # an FEI2 file whose records stop at the FEI1 fields
])
def test_fei_mrc2014_records_of_declared_size(tmp_path, stack5, tilts, exttyp, size, version):
    ext = b"".join(_fei_record(size, version, t, 2.34e-10) for t in tilts)
    img = read_image(_mrc(tmp_path / "fei.mrc", stack5, ext, exttyp=exttyp))
    assert img.tilt_angles_deg == tilts
    assert img.pixel_size_A == pytest.approx(2.34)  # the 1.0 Å main-header placeholder is not used
    assert img.metadata["extended_header"] == f"{exttyp.decode()} ({size}-byte records)"


def test_xplore3d_tilt_series_128_byte_records(tmp_path):
    # FEI Xplore3D: 77 sections of 256 x 256, nint=0 nreal=32 (1024 records of 32 floats), header pixel 1.0
    angles = np.arange(-76.0, 76.0 + 1, 2.0)
    assert len(angles) == 77
    rec = np.zeros((1024, 32), "<f4")
    rec[:77, 0] = angles        # alpha tilt (degrees)
    rec[:77, 10] = 84.0         # tilt axis (degrees)
    rec[:77, 11] = 3.36e-9      # pixel size (m)
    rec[:77, 12] = 29000.0      # magnification
    data = np.random.default_rng(1).integers(0, 4000, (77, 256, 256)).astype(np.int16)
    path = _mrc(tmp_path / "xplore3d.mrc", data, rec.tobytes(), nreal=32)
    img = read_image(path)
    np.testing.assert_allclose(img.tilt_angles_deg, angles)
    assert img.pixel_size_A == pytest.approx(33.6)
    assert img.metadata["extended_header"] == "FEI/Agard (128-byte records)"
    assert img.metadata["pixel_size_source"].startswith("extended header")


def test_undeclared_fei_record_size_is_found_from_1024_records(tmp_path, stack5, tilts):
    rec = np.zeros((1024, 32), "<f4")
    rec[:5, 0] = tilts
    rec[:, 11] = 3.1e-10
    img = read_image(_mrc(tmp_path / "old.mrc", stack5, rec.tobytes()))  # nint = nreal = 0
    assert img.tilt_angles_deg == tilts
    assert img.pixel_size_A == pytest.approx(3.1)


def test_real_header_pixel_size_wins_over_extended_header(tmp_path, stack5, tilts):
    ext = b"".join(_fei_record(FEI1_RECORD, 1, t, 2.34e-10) for t in tilts)
    img = read_image(_mrc(tmp_path / "binned.mrc", stack5, ext, exttyp=b"FEI1", voxel_A=9.36))
    assert img.pixel_size_A == pytest.approx(9.36)  # e.g. binned by 4 after acquisition
    assert img.metadata["pixel_size_source"] == "MRC header"
    assert img.tilt_angles_deg == tilts


def test_fei1_same_tilt_everywhere_is_not_a_tilt_series(tmp_path, stack5):
    ext = b"".join(_fei_record(FEI1_RECORD, 1, 0.0, 2e-10) for _ in range(5))
    img = read_image(_mrc(tmp_path / "movie.mrc", stack5, ext, exttyp=b"FEI1"))
    assert img.tilt_angles_deg is None
    assert img.pixel_size_A == pytest.approx(2.0)


@pytest.mark.parametrize("exttyp", [b"SERI", b""])
def test_serialem_tilt_angles(tmp_path, stack5, tilts, exttyp):
    # SerialEM: nint = bytes per section, nreal = flags; 1 = tilt x 100 (int16), 4 = stage x, y (2 x int16)
    ext = b"".join(struct.pack("<hhh", round(t * 100), 120, -40) for t in tilts)
    img = read_image(_mrc(tmp_path / "serialem.mrc", stack5, ext, exttyp=exttyp, voxel_A=2.1, nint=6, nreal=1 | 4))
    assert img.tilt_angles_deg == tilts
    assert img.pixel_size_A == pytest.approx(2.1)


def test_extended_header_survives_a_round_trip(tmp_path):
    angles = np.arange(-76.0, 77.0, 2.0)
    rec = np.zeros((1024, 32), "<f4")
    rec[:77, 0], rec[:77, 11] = angles, 3.36e-9
    data = np.random.default_rng(2).normal(0, 1, (77, 8, 8)).astype(np.float32)
    img = read_image(_mrc(tmp_path / "in.mrc", data, rec.tobytes(), nreal=32))
    out = read_image(write_image(tmp_path / "out.mrc", img.data, like=img))
    np.testing.assert_allclose(out.tilt_angles_deg, angles)
    assert out.pixel_size_A == pytest.approx(33.6)
    assert out.metadata["pixel_size_source"] == "MRC header"  # now written into the main header too
