"""TIFF scales as vendors write them (DM export, FEI/Thermo Helios, Olympus SIS with a JPEG preview, ImageJ),
the tifffile fallback, and output TIFFs whose scale rosettasciio (hyperspy) and Fiji's ImageJ tags read back."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import tifffile
from em_noise.errors import EMInputError
from em_noise.io import read_image, write_image
from PIL import Image

rsciio_tiff = pytest.importorskip("rsciio.tiff")


@pytest.fixture
def counts() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 4000, (40, 50)).astype(np.uint16)


def _dm_tiff(path, data, scale_um: float, units: str = "µm"):
    """TIFF exported by Gatan DigitalMicrograph: private tags 65003.. hold units, origins and scales."""
    um = units.encode("latin-1")
    tags = [(65003, "s", 3, um, False), (65004, "s", 3, um, False),
            (65006, "d", 1, 0.0, False), (65007, "d", 1, 0.0, False),
            (65009, "d", 1, scale_um, False), (65010, "d", 1, scale_um, False),
            (65022, "s", 3, b"e-", False), (65024, "d", 1, 0.0, False), (65025, "d", 1, 1.0, False)]
    tifffile.imwrite(path, data, extratags=tags, resolution=(72, 72), resolutionunit="INCH",
                     software="DigitalMicrograph", metadata=None)
    return path


def _helios_tiff(path, data, pixel_m: float):
    """FEI/Thermo Helios SEM TIFF: INI-style metadata in tag 34682 (FEI_HELIOS), pixel size in metres."""
    ini = (f"[User]\r\nDate=03/14/2021\r\nTime=10:12:00 AM\r\nUser=supervisor\r\n"
           f"[Beam]\r\nHV=5000\r\nBeam=EBeam\r\n"
           f"[Scan]\r\nInternalScan=1\r\nDwelltime=3e-06\r\nPixelWidth={pixel_m}\r\nPixelHeight={pixel_m}\r\n"
           f"HorFieldsize={pixel_m * data.shape[1]}\r\nVerFieldsize={pixel_m * data.shape[0]}\r\n"
           f"[Image]\r\nResolutionX={data.shape[1]}\r\nResolutionY={data.shape[0]}\r\nDigitalContrast=1\r\n")
    tifffile.imwrite(path, data, extratags=[(34682, "s", 0, ini, True)], metadata=None)
    return path


def _olympus_sis_tiff(path, raw: np.ndarray, pixel_m: float):
    """Olympus SIS TIFF: an RGB JPEG preview, then the raw uint16 image with the binary SIS calibration tag."""
    preview = np.repeat((raw >> 8).astype(np.uint8)[..., None], 3, axis=-1)
    with tifffile.TiffWriter(path) as tw:
        tw.write(preview, photometric="rgb", compression="jpeg", metadata=None)
        tw.write(raw, extratags=[(33560, "I", 1, 0, False)], metadata=None)  # offset patched below
    raw_bytes = bytearray(path.read_bytes())
    ifd = struct.unpack_from("<I", raw_bytes, 4)[0]
    ifd = struct.unpack_from("<I", raw_bytes, ifd + 2 + 12 * struct.unpack_from("<H", raw_bytes, ifd)[0])[0]
    entries = [ifd + 2 + 12 * i for i in range(struct.unpack_from("<H", raw_bytes, ifd)[0])]
    value_at = next(e for e in entries if struct.unpack_from("<H", raw_bytes, e)[0] == 33560) + 8  # code, type, count
    blob_at = (len(raw_bytes) + 1) // 2 * 2
    lenexp, xcal = -12, pixel_m * 1e12  # pixel size = cal x 10^lenexp (m)
    general = struct.pack("<10xhdd8xd2x34s32s", lenexp, xcal, xcal, 2.05e6, b"Veleta", b"TEM image")
    sis = struct.pack("<4s6xhhhhh6x32sH", b"SIS0", 12, 10, 14, 2, 121, b"iTEM", 1)
    sis += struct.pack("<hhI", 1, 1, blob_at + len(sis) + 8) + general
    raw_bytes = raw_bytes.ljust(blob_at, b"\x00") + sis
    struct.pack_into("<I", raw_bytes, value_at, blob_at)
    path.write_bytes(bytes(raw_bytes))
    return path


def test_dm_exported_tiff_keeps_its_scale(tmp_path, counts):
    img = read_image(_dm_tiff(tmp_path / "dm.tif", counts, 0.168675))
    assert img.pixel_size_A == pytest.approx(1686.75)
    np.testing.assert_array_equal(img.data, counts)


def test_dm_exported_diffraction_tiff_is_refused(tmp_path, counts):
    with pytest.raises(EMInputError) as e:
        read_image(_dm_tiff(tmp_path / "dp.tif", counts, 0.0125, units="1/nm"))
    msg = str(e.value)
    assert "dp.tif" in msg and "diffraction" in msg and "1/nm" in msg and "\n" not in msg


def test_fei_helios_tiff_keeps_its_scale(tmp_path, counts):
    img = read_image(_helios_tiff(tmp_path / "helios.tif", counts, 3e-6))
    assert img.pixel_size_A == pytest.approx(3e4)


def test_olympus_jpeg_tiff_gives_the_calibrated_raw_image(tmp_path, counts):
    pytest.importorskip("imagecodecs")
    img = read_image(_olympus_sis_tiff(tmp_path / "olympus.tif", counts, 2.3928e-11))
    np.testing.assert_array_equal(img.data, counts)  # the raw series, not the 8-bit preview
    assert img.pixel_size_A == pytest.approx(0.23928)
    assert len(img.metadata["signals"]) == 2


def test_jpeg_tiff_without_imagecodecs_says_so(tmp_path, counts, monkeypatch):
    pytest.importorskip("imagecodecs")
    path = tmp_path / "jpeg.tif"
    tifffile.imwrite(path, (counts >> 8).astype(np.uint8), compression="jpeg")

    def missing(*a, **k):
        raise ValueError("<COMPRESSION.JPEG: 7> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", missing)
    with pytest.raises(EMInputError) as e:
        read_image(path)
    assert "jpeg.tif" in str(e.value) and "imagecodecs" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("ndim", [2, 3])
def test_output_tiff_scale_reads_back_through_rosettasciio(tmp_path, ndim):
    data = np.random.default_rng(1).random((3, 20, 30) if ndim == 3 else (20, 30)).astype(np.float32)
    path = write_image(tmp_path / "out.tif", data, pixel_size_A=1.37)
    (sig,) = rsciio_tiff.file_reader(str(path))
    x, y = sig["axes"][-1], sig["axes"][-2]
    assert x["units"] == y["units"] == "µm"
    assert x["scale"] == pytest.approx(1.37e-4, rel=1e-9) and y["scale"] == pytest.approx(1.37e-4, rel=1e-9)
    assert sig["data"].dtype == np.float32
    np.testing.assert_array_equal(sig["data"], data)


def test_output_tiff_scale_in_imagej_terms(tmp_path):
    # what Fiji reads: ImageJ description unit=micron, X/YResolution in pixels per micron
    path = write_image(tmp_path / "out.tif", np.ones((8, 8), np.float32), pixel_size_A=2.5)
    with tifffile.TiffFile(path) as tif:
        assert tif.imagej_metadata["unit"] == "micron"
        num, den = tif.pages[0].tags["XResolution"].value
        assert num / den == pytest.approx(1e4 / 2.5)


def test_volume_tiff_has_z_spacing(tmp_path):
    path = write_image(tmp_path / "vol.tif", np.ones((4, 8, 8), np.float32), pixel_size_A=4.0, volume=True)
    (sig,) = rsciio_tiff.file_reader(str(path))
    assert sig["axes"][0]["scale"] == pytest.approx(4e-4)


def test_imagej_nm_tiff_from_older_outputs(tmp_path):
    tifffile.imwrite(tmp_path / "nm.tif", np.ones((8, 8), np.float32), imagej=True, resolution=(5.0, 5.0),
                     metadata={"unit": "nm"})
    assert read_image(tmp_path / "nm.tif").pixel_size_A == pytest.approx(2.0)


def test_tifffile_fallback_without_rosettasciio(tmp_path, counts, no_rosettasciio):
    tifffile.imwrite(tmp_path / "a.tif", np.ones((8, 8), np.float32), imagej=True,
                     resolution=(1 / 0.0002, 1 / 0.0002), metadata={"unit": "micron"})
    img = read_image(tmp_path / "a.tif")
    assert img.pixel_size_A == pytest.approx(2.0)
    assert img.metadata["reader"] == "tifffile"
    assert read_image(write_image(tmp_path / "b.tif", counts, pixel_size_A=3.0)).pixel_size_A == pytest.approx(3.0)


def test_png16_reads_at_full_depth_and_writes_float_tiff(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32) * 16 % 65536).astype(np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "in.png")
    img = read_image(tmp_path / "in.png")
    np.testing.assert_array_equal(img.data, ramp.astype(np.float32))
    out = read_image(write_image(tmp_path / "out.tif", img.data / 7.0, pixel_size_A=0.8))
    assert out.metadata["dtype"] == "float32"
    np.testing.assert_array_equal(out.data, (img.data / 7.0).astype(np.float32))
    assert out.pixel_size_A == pytest.approx(0.8)


def test_png16_colour_gray_reads_at_full_depth(tmp_path):
    imagecodecs = pytest.importorskip("imagecodecs")
    g = (np.arange(32 * 32, dtype=np.uint32) * 61 % 65536).astype(np.uint16).reshape(32, 32)
    (tmp_path / "rgb16.png").write_bytes(imagecodecs.png_encode(np.stack([g, g, g], -1)))
    np.testing.assert_array_equal(read_image(tmp_path / "rgb16.png").data, g.astype(np.float32))
