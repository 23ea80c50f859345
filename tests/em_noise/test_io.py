"""Readers and writers: round trips with pixel size kept, headers copied, every bad-input case."""
from __future__ import annotations

import os

import mrcfile
import numpy as np
import pytest
import tifffile
from em_noise.errors import EMInputError
from em_noise.io import atomic_write, output_path, read_image, write_image
from PIL import Image


@pytest.fixture
def stack() -> np.ndarray:
    return np.random.default_rng(0).normal(100, 10, size=(3, 24, 32)).astype(np.float32)


@pytest.mark.parametrize("ext", [".tif", ".tiff", ".mrc", ".mrcs", ".st", ".ali", ".rec", ".map"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_round_trip_keeps_data_and_pixel_size(tmp_path, stack, ext, ndim):
    data = stack if ndim == 3 else stack[0]
    path = write_image(tmp_path / f"a{ext}", data, pixel_size_A=1.37)
    img = read_image(path)
    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size_A == pytest.approx(1.37, rel=1e-5)
    assert img.data.dtype == np.float32


def test_npy_round_trip(tmp_path, stack):
    img = read_image(write_image(tmp_path / "a.npy", stack))
    np.testing.assert_array_equal(img.data, stack)
    assert img.pixel_size_A is None


def test_png_round_trip_8bit(tmp_path):
    data = np.arange(256, dtype=np.float32).reshape(16, 16)
    img = read_image(write_image(tmp_path / "a.png", data))
    np.testing.assert_array_equal(img.data, data)
    assert img.metadata["dtype"] == "uint8"


def test_png_rgb_gray_is_accepted_and_colour_rejected(tmp_path):
    g = np.random.default_rng(1).integers(0, 255, (10, 12), dtype=np.uint8)
    Image.fromarray(np.stack([g, g, g], -1)).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png").data, g)
    c = np.stack([g, g // 2, g], -1)
    Image.fromarray(c).save(tmp_path / "colour.png")
    with pytest.raises(EMInputError, match="colour"):
        read_image(tmp_path / "colour.png")


def test_tiff_pixel_size_from_imagej_micron(tmp_path):
    # Fiji writes 'micron' and pixels per micron in the resolution tags
    tifffile.imwrite(tmp_path / "a.tif", np.ones((8, 8), np.float32), imagej=True,
                     resolution=(1 / 0.0002, 1 / 0.0002), metadata={"unit": "micron"})
    assert read_image(tmp_path / "a.tif").pixel_size_A == pytest.approx(2.0)


def test_tiff_pixel_size_from_centimetre_tags(tmp_path):
    # 1e8 px per cm = 1 Å per px
    tifffile.imwrite(tmp_path / "a.tif", np.ones((8, 8), np.uint16), resolution=(1e8, 1e8), resolutionunit="CENTIMETER")
    assert read_image(tmp_path / "a.tif").pixel_size_A == pytest.approx(1.0)


def test_tiff_without_calibration_has_no_pixel_size(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.ones((8, 8), np.uint8))
    assert read_image(tmp_path / "a.tif").pixel_size_A is None


def test_mrc_header_is_copied(tmp_path, stack):
    src = tmp_path / "in.mrc"
    with mrcfile.new(src) as m:
        m.set_data(stack)
        m.set_image_stack()
        m.voxel_size = 2.5
        m.header.origin.x = 12.0
        m.header.label[0] = b"acquired on a test microscope"
        m.header.nlabl = 1
    img = read_image(src)
    out = write_image(tmp_path / "out.mrc", img.data * 2, like=img)
    with mrcfile.open(out) as m:
        assert float(m.voxel_size.x) == pytest.approx(2.5)
        assert float(m.header.origin.x) == pytest.approx(12.0)
        assert bytes(m.header.label[0]).startswith(b"acquired on a test microscope")
        assert m.is_image_stack()
        np.testing.assert_allclose(m.data, stack * 2)


def _old_fei_mrc(path, data, tilts, pixel_size_m):
    ext = np.zeros((1024, 128), np.float32)
    ext[: len(tilts), 0] = tilts
    ext[:, 11] = pixel_size_m
    with mrcfile.new(path) as m:
        m.set_data(data)
        m.set_extended_header(np.frombuffer(ext.tobytes(), dtype="V1"))


def test_old_fei_extended_header_gives_tilts_and_pixel_size(tmp_path, stack):
    _old_fei_mrc(tmp_path / "fei.mrc", stack, [-60.0, 0.0, 60.0], 3.1e-10)
    img = read_image(tmp_path / "fei.mrc")
    assert img.tilt_angles_deg == [-60.0, 0.0, 60.0]
    assert img.pixel_size_A == pytest.approx(3.1)
    out = read_image(write_image(tmp_path / "out.mrc", img.data, like=img))
    assert out.tilt_angles_deg == [-60.0, 0.0, 60.0]
    assert out.pixel_size_A == pytest.approx(3.1)


def test_fei1_extended_header(tmp_path, stack):
    from mrcfile.dtypes import get_ext_header_dtype

    dt = get_ext_header_dtype(b"FEI1")
    ext = np.zeros(3, dtype=dt)
    ext["Metadata size"] = dt.itemsize
    ext["Alpha tilt"] = [-45.0, 0.0, 45.0]
    ext["Pixel size X"] = 1.5e-10
    with mrcfile.new(tmp_path / "f.mrc") as m:
        m.set_data(stack)
        m.set_extended_header(ext)
        m.header.exttyp = b"FEI1"
    img = read_image(tmp_path / "f.mrc")
    assert img.tilt_angles_deg == [-45.0, 0.0, 45.0]
    assert img.pixel_size_A == pytest.approx(1.5)


# ------------------------------------------------------------------------------------------- bad input


def _msg(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    with pytest.raises(EMInputError) as e:
        read_image(tmp_path / "nope.mrc")
    assert "nope.mrc" in _msg(e) and "no such file" in _msg(e)


def test_unknown_extension(tmp_path):
    (tmp_path / "a.xyz").write_bytes(b"123")
    with pytest.raises(EMInputError) as e:
        read_image(tmp_path / "a.xyz")
    assert "a.xyz" in _msg(e) and "extension" in _msg(e)


@pytest.mark.parametrize("ext", [".mrc", ".tif", ".npy", ".png"])
def test_truncated_file(tmp_path, stack, ext):
    good = write_image(tmp_path / f"good{ext}", stack[0] if ext == ".png" else stack)
    raw = good.read_bytes()
    bad = tmp_path / f"bad{ext}"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(EMInputError) as e:
        read_image(bad)
    assert f"bad{ext}" in _msg(e)


@pytest.mark.parametrize("ext", [".mrc", ".tif", ".npy", ".png"])
def test_garbage_file(tmp_path, ext):
    bad = tmp_path / f"junk{ext}"
    bad.write_bytes(os.urandom(3000))
    with pytest.raises(EMInputError) as e:
        read_image(bad)
    assert f"junk{ext}" in _msg(e)


def test_empty_file(tmp_path):
    (tmp_path / "e.tif").write_bytes(b"")
    with pytest.raises(EMInputError, match="empty"):
        read_image(tmp_path / "e.tif")


def test_empty_array(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 5), np.float32))
    with pytest.raises(EMInputError, match="empty"):
        read_image(tmp_path / "e.npy")


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite(tmp_path, bad_value):
    a = np.ones((8, 8), np.float32)
    a[3, 3] = bad_value
    np.save(tmp_path / "n.npy", a)
    with pytest.raises(EMInputError, match="non-finite"):
        read_image(tmp_path / "n.npy")


@pytest.mark.parametrize("shape", [(16,), (2, 2, 4, 4)])
def test_wrong_dimensions(tmp_path, shape):
    np.save(tmp_path / "d.npy", np.ones(shape, np.float32))
    with pytest.raises(EMInputError, match="2-D image or 3-D stack"):
        read_image(tmp_path / "d.npy")


def test_integer_overflow(tmp_path):
    a = np.full((8, 8), 2**40, dtype=np.int64)
    np.save(tmp_path / "i.npy", a)
    with pytest.raises(EMInputError, match="overflow"):
        read_image(tmp_path / "i.npy")


def test_complex_rejected(tmp_path):
    np.save(tmp_path / "c.npy", np.ones((8, 8), np.complex64))
    with pytest.raises(EMInputError, match="complex"):
        read_image(tmp_path / "c.npy")


def test_rsciio_formats_name_the_extra_when_missing(tmp_path, no_rosettasciio):
    (tmp_path / "f.dm4").write_bytes(b"x" * 100)
    with pytest.raises(EMInputError) as e:
        read_image(tmp_path / "f.dm4")
    assert "em-noise[formats]" in _msg(e)


# ------------------------------------------------------------------------------------------- writing rules


def test_never_overwrites_input(tmp_path, stack):
    src = write_image(tmp_path / "in.mrc", stack)
    img = read_image(src)
    with pytest.raises(EMInputError, match="input"):
        write_image(src, stack * 0, like=img, overwrite=True)
    np.testing.assert_array_equal(read_image(src).data, stack)


def test_existing_output_needs_overwrite(tmp_path, stack):
    out = write_image(tmp_path / "o.tif", stack)
    with pytest.raises(EMInputError, match="--overwrite"):
        write_image(out, stack * 2)
    write_image(out, stack * 2, overwrite=True)
    np.testing.assert_array_equal(read_image(out).data, stack * 2)


def test_failed_write_leaves_no_partial_file(tmp_path):
    def boom(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x.mrc", boom)
    assert list(tmp_path.iterdir()) == []


def test_output_path(tmp_path):
    assert output_path("a/b.mrc", "enhanced") == output_path("a/b.mrc", "enhanced")
    assert output_path("a/b.mrc", "enhanced").name == "b.enhanced.mrc"
    out = output_path("a/b.mrc", "denoised", tmp_path / "new", ext=".tif")
    assert out == tmp_path / "new" / "b.denoised.tif" and not out.parent.exists()  # made only when written
    write_image(out, np.ones((4, 4), np.float32))
    assert out.parent.is_dir()


def test_emd_through_rosettasciio_keeps_pixel_size(tmp_path):
    emd = pytest.importorskip("rsciio.emd")
    axes = [{"size": n, "scale": 0.05, "units": "nm", "name": a, "offset": 0, "navigate": False}
            for n, a in ((16, "y"), (20, "x"))]
    data = np.random.default_rng(4).random((16, 20)).astype(np.float32)
    emd.file_writer(str(tmp_path / "a.emd"), {"data": data, "axes": axes, "original_metadata": {},
                                              "metadata": {"General": {"title": "t"}, "Signal": {"signal_type": ""}}})
    img = read_image(tmp_path / "a.emd")
    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size_A == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------- provenance

PROVENANCE = {"program": "sfin-enhance", "model": "sfin-haadf", "version": "0.1.0",
              "tiling": {"tile": 64, "overlap": 16}, "seed": 0}


@pytest.mark.parametrize("ext", [".tif", ".mrc", ".png"])
def test_provenance_reads_back(tmp_path, stack, ext):
    data = np.clip(stack[0], 0, 255) if ext == ".png" else stack
    img = read_image(write_image(tmp_path / f"out{ext}", data, pixel_size_A=1.5, provenance=PROVENANCE))
    assert img.provenance == PROVENANCE


def test_provenance_in_tiff_description_is_json(tmp_path, stack):
    import json

    path = write_image(tmp_path / "out.tif", stack, pixel_size_A=1.5, provenance=PROVENANCE)
    with tifffile.TiffFile(path) as tif:
        line = next(ln for ln in tif.pages[0].description.splitlines() if ln.startswith("provenance="))
    assert json.loads(line.removeprefix("provenance=")) == PROVENANCE


def test_provenance_mrc_labels_are_80_characters_and_keep_the_source_labels(tmp_path, stack):
    src = tmp_path / "in.mrc"
    with mrcfile.new(src) as m:
        m.set_data(stack)
        for i in range(10):
            m.header.label[i] = f"label {i} from the microscope".encode()
        m.header.nlabl = 10
    long_note = "x" * 200
    out = write_image(tmp_path / "out.mrc", stack, like=read_image(src), provenance={**PROVENANCE, "note": long_note})
    with mrcfile.open(out) as m:
        labels = [bytes(m.header.label[i]).rstrip(b"\x00 ") for i in range(int(m.header.nlabl))]
    assert int(len(labels)) == 10
    assert all(len(lab) <= 80 for lab in labels)
    assert labels[0] == b"label 0 from the microscope"  # the origin is kept, then the latest source labels
    assert labels[:4] == [b"label 0 from the microscope", b"label 7 from the microscope",
                          b"label 8 from the microscope", b"label 9 from the microscope"]
    assert labels[4:] == [b"provenance program=sfin-enhance", b"provenance model=sfin-haadf",
                          b"provenance version=0.1.0", b'provenance tiling={"tile":64,"overlap":16}',
                          b"provenance seed=0", b"provenance note=" + b"x" * 61 + b"..."]
    back = read_image(out).provenance
    assert back["tiling"] == {"tile": 64, "overlap": 16} and back["note"] == "x" * 61 + "..."


def test_new_provenance_replaces_the_inputs(tmp_path, stack):
    first = read_image(write_image(tmp_path / "a.mrc", stack, provenance={"model": "old", "step": 1}))
    second = read_image(write_image(tmp_path / "b.mrc", stack, like=first, provenance={"model": "new"}))
    assert second.provenance == {"model": "new"}
    kept = read_image(write_image(tmp_path / "c.mrc", stack, like=first))
    assert kept.provenance == {"model": "old", "step": 1}


def test_provenance_string_that_looks_like_json_stays_a_string(tmp_path, stack):
    img = read_image(write_image(tmp_path / "a.mrc", stack, provenance={"version": "64", "flag": "true"}))
    assert img.provenance == {"version": "64", "flag": "true"}


def test_bad_provenance_writes_nothing(tmp_path, stack):
    with pytest.raises(TypeError):
        write_image(tmp_path / "a.tif", stack, provenance=["not", "a", "dict"])
    assert list(tmp_path.iterdir()) == []
