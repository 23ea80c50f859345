"""Multi-signal vendor files (Velox EMD, TIA SER, Berkeley EMD): the image is picked, spectrum images and
diffraction are refused with one line, and every unit spelling rosettasciio reports becomes Å."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from em_noise.errors import EMInputError
from em_noise.formats.units import is_reciprocal, length_to_A, unit_kind
from em_noise.io import read_image

h5py = pytest.importorskip("h5py")
rsciio_emd = pytest.importorskip("rsciio.emd")
pytest.importorskip("rsciio.tia")


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------- TIA SER (FEI TIA)

SER_SPECTRUM, SER_IMAGE, SER_TIME_TAG = 0x4120, 0x4122, 0x4152
SER_INT32, SER_UINT16 = 6, 2


def _ser(path, elements: list[np.ndarray], dims: list[tuple[int, str]], *, spectrum: bool, delta: float):
    """A TIA .ser file (series version 0x210): header, dimension arrays, offset arrays, then each element.

    ``dims``: (size, units) of each series dimension; ``delta``: per-element calibration (eV per channel
    for spectra, metres per pixel for images).
    """
    n = len(elements)
    dim_bytes = b""
    for size, units in dims:
        dim_bytes += struct.pack("<IddII", size, 0.0, 1e-9 if units else 1.0, 0, 0)
        dim_bytes += struct.pack("<I", len(units)) + units.encode()
    header_len = 30
    offsets_at = header_len + len(dim_bytes)
    body_at = offsets_at + 8 * n
    body, data_offsets, tag_offsets = b"", [], []
    for i, el in enumerate(elements):
        data_offsets.append(body_at + len(body))
        if spectrum:
            body += struct.pack("<ddIHI", 100.0, delta, 0, SER_INT32, el.size) + el.astype("<i4").tobytes()
        else:
            ny, nx = el.shape
            body += struct.pack("<ddIddIHII", 0.0, delta, 0, 0.0, delta, 0, SER_UINT16, nx, ny)
            body += el[::-1].astype("<u2").tobytes()  # TIA stores rows bottom-up
        tag_offsets.append(body_at + len(body))
        body += struct.pack("<HHI", SER_TIME_TAG, 0, 1_600_000_000 + i)
    head = struct.pack("<HHHIIIIII", 0x4949, 0x0197, 0x0210, SER_SPECTRUM if spectrum else SER_IMAGE,
                       SER_TIME_TAG, n, n, offsets_at, len(dims))
    offsets = struct.pack(f"<{n}I{n}I", *data_offsets, *tag_offsets)
    path.write_bytes(head + dim_bytes + offsets + body)
    return path


def test_ser_spectrum_image_is_refused_with_one_line(tmp_path):
    spectra = [np.random.default_rng(i).poisson(5, 1024) for i in range(25)]
    path = _ser(tmp_path / "si.ser", spectra, [(5, "meters"), (5, "meters")], spectrum=True, delta=10.0)
    with pytest.raises(EMInputError) as e:
        read_image(path)
    msg = _one_line(e)
    assert "si.ser" in msg and "spectrum image" in msg and "5 x 5 x 1024" in msg and "eV" in msg


def test_ser_image_keeps_its_pixel_size(tmp_path):
    img = np.random.default_rng(0).integers(0, 60000, (24, 32)).astype(np.uint16)
    path = _ser(tmp_path / "haadf.ser", [img], [(1, "")], spectrum=False, delta=2.5e-11)
    out = read_image(path)
    np.testing.assert_array_equal(out.data, img)
    assert out.pixel_size_A == pytest.approx(0.25)


# ------------------------------------------------------------------------------------- Velox EMD (Thermo)

def _json_bytes(obj) -> np.ndarray:
    """Velox stores metadata as a column of UTF-8 bytes."""
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8).reshape(-1, 1)


def _velox(path, images: dict[str, np.ndarray], pixel_m: float, with_spectrum_image: bool = False):
    """A Velox (version 11) EMD file: one /Data/Image/<uuid> per detector, optionally an EDS spectrum image."""
    with h5py.File(path, "w") as f:
        f["Version"] = np.array([json.dumps({"format": "Velox", "version": "11"}).encode()])
        displays = f.create_group("Displays/ImageDisplay")
        refs = f.create_group("SharedProperties/ImageSeriesDataReference")
        for i, (detector, data) in enumerate(images.items()):
            uuid = f"{i:032x}"
            group = f.create_group(f"Data/Image/{uuid}")
            group["Data"] = data[..., None]  # (y, x, frame)
            group["Metadata"] = _json_bytes({
                "BinaryResult": {"PixelSize": {"width": str(pixel_m), "height": str(pixel_m)}, "PixelUnitX": "m",
                                 "PixelUnitY": "m", "Offset": {"x": "0", "y": "0"}, "DetectorIndex": str(i)},
                "Detectors": {f"Detector-{j}": {"DetectorName": name} for j, name in enumerate(images)},
                "Acquisition": {"AcquisitionStartDatetime": {"DateTime": "1610000000"}},
                "Scan": {"DwellTime": "2e-06", "FrameTime": "1.5"},
                "Optics": {"AccelerationVoltage": "300000"}})
            refs[f"r{i}"] = np.array([json.dumps({"dataPath": f"/Data/Image/{uuid}"}).encode()])
            displays[f"d{i}"] = np.array([json.dumps({"data": f"/SharedProperties/ImageSeriesDataReference/r{i}",
                                                      "id": detector, "title": detector}).encode()])
        if with_spectrum_image:
            si = f.create_group("Data/SpectrumImage/" + "e" * 32)
            si["Data"] = np.zeros((1, 1), np.uint8)
            si["Metadata"] = _json_bytes({"BinaryResult": {"PixelUnitX": "m"}})
            si["SpectrumImageSettings"] = np.array([json.dumps({"endFramePosition": "1"}).encode()])
            stream = f.create_group("Data/SpectrumStream/" + "f" * 32)
            stream["Data"] = np.full((64, 1), 65535, np.uint16)  # packed event stream; not needed for the image
            stream["Metadata"] = si["Metadata"][()]


@pytest.fixture
def detectors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {name: rng.integers(0, 1000, (16, 20)).astype(np.uint16) for name in ("BF", "DF4", "HAADF")}


def test_velox_picks_haadf_out_of_several_detectors(tmp_path, detectors):
    _velox(tmp_path / "v.emd", detectors, 4.2e-11)
    img = read_image(tmp_path / "v.emd")
    np.testing.assert_array_equal(img.data, detectors["HAADF"])
    assert img.metadata["signal_title"] == "HAADF"
    assert img.pixel_size_A == pytest.approx(0.42)
    assert len(img.metadata["signals"]) == 3


def test_velox_signal_by_title(tmp_path, detectors):
    _velox(tmp_path / "v.emd", detectors, 4.2e-11)
    np.testing.assert_array_equal(read_image(tmp_path / "v.emd", signal="bf").data, detectors["BF"])
    with pytest.raises(EMInputError) as e:
        read_image(tmp_path / "v.emd", signal="iDPC")
    assert "iDPC" in _one_line(e) and "'HAADF'" in _one_line(e)


def test_velox_spectrum_image_file_gives_its_haadf_image(tmp_path, detectors):
    _velox(tmp_path / "si.emd", {"HAADF": detectors["HAADF"]}, 1e-10, with_spectrum_image=True)
    img = read_image(tmp_path / "si.emd")
    np.testing.assert_array_equal(img.data, detectors["HAADF"])
    assert img.pixel_size_A == pytest.approx(1.0)


# ------------------------------------------------------------------------------------- Berkeley EMD (NCEM)

def _ncem(path, data: np.ndarray, axes: list[tuple[str, float, str]], raw_units: list[str] | None = None):
    """A Berkeley EMD written by rosettasciio; ``raw_units`` then overwrite the dims' unit attributes as given."""
    ax = [{"size": n, "scale": scale, "units": units, "name": name, "offset": 0.0, "navigate": False}
          for n, (name, scale, units) in zip(data.shape, axes)]
    rsciio_emd.file_writer(str(path), {"data": data, "axes": ax, "original_metadata": {},
                                       "metadata": {"General": {"title": "t"}, "Signal": {"signal_type": ""}}})
    if raw_units is not None:
        with h5py.File(path, "r+") as f:
            data_path = f.visit(lambda k: k if k.rsplit("/", 1)[-1] == "data" else None)
            group = f[data_path.rsplit("/", 1)[0]]
            for k, units in enumerate(raw_units[::-1], start=1):  # dims are stored in reverse (Fortran) order
                group[f"dim{k}"].attrs["units"] = units
    return path


@pytest.mark.parametrize(("units", "to_A"), [
    ("nm", 10.0), ("n_m", 10.0), ("[n_m]", 10.0), ("Å", 1.0), ("A", 1.0), ("µm", 1e4), ("um", 1e4),
    ("pm", 0.01), ("m", 1e10), ("micron", 1e4),
])
def test_berkeley_emd_units_become_angstrom(tmp_path, units, to_A):
    data = np.random.default_rng(4).random((16, 20)).astype(np.float32)
    path = _ncem(tmp_path / "a.emd", data, [("y", 0.05, "nm"), ("x", 0.05, "nm")], raw_units=[units, units])
    assert read_image(path).pixel_size_A == pytest.approx(0.05 * to_A)


def test_berkeley_emd_spectrum_image_is_refused(tmp_path):
    data = np.random.default_rng(5).random((5, 5, 256)).astype(np.float32)
    path = _ncem(tmp_path / "si.emd", data, [("y", 1.0, "nm"), ("x", 1.0, "nm"), ("E", 5.0, "eV")])
    with pytest.raises(EMInputError) as e:
        read_image(path)
    assert "si.emd" in _one_line(e) and "spectrum image" in _one_line(e)


def test_berkeley_emd_diffraction_is_refused(tmp_path):
    data = np.random.default_rng(6).random((32, 32)).astype(np.float32)
    path = _ncem(tmp_path / "dp.emd", data, [("ky", 0.02, "1/nm"), ("kx", 0.02, "1/nm")])
    with pytest.raises(EMInputError) as e:
        read_image(path)
    assert "dp.emd" in _one_line(e) and "diffraction" in _one_line(e)


def test_berkeley_emd_frame_stack_is_a_stack(tmp_path):
    data = np.random.default_rng(7).random((4, 16, 20)).astype(np.float32)
    path = _ncem(tmp_path / "frames.emd", data, [("t", 0.5, "s"), ("y", 0.2, "nm"), ("x", 0.2, "nm")])
    img = read_image(path)
    assert img.data.shape == (4, 16, 20) and img.pixel_size_A == pytest.approx(2.0)


# ------------------------------------------------------------------------------------- unit spellings

@pytest.mark.parametrize(("unit", "to_A"), [
    ("nm", 10.0), ("n_m", 10.0), ("[n_m]", 10.0), ("Å", 1.0), ("\u212b", 1.0), ("A", 1.0), ("angstrom", 1.0),
    ("µm", 1e4), ("\u03bcm", 1e4), ("um", 1e4), ("micron", 1e4), (b"\xb5m", 1e4), ("pm", 0.01), ("m", 1e10),
    ("meters", 1e10), ("mm", 1e7), (" NM ", 10.0), ("µ", 1e4),  # pint writes micron as µ
])
def test_length_units(unit, to_A):
    assert length_to_A(unit) == to_A


@pytest.mark.parametrize(("unit", "kind"), [
    ("1/nm", "reciprocal"), ("1 / nm", "reciprocal"), ("nm^-1", "reciprocal"), ("1/Å", "reciprocal"),
    ("eV", "energy"), ("keV", "energy"), ("mrad", "angle"), ("s", "time"), (None, "none"), ("<undefined>", "none"),
    ("", "none"), ("nm", "length"), ("kg", "other"),
])
def test_unit_kinds(unit, kind):
    assert unit_kind(unit) == kind
    assert is_reciprocal(unit) == (kind == "reciprocal")
    assert length_to_A(unit) is None or kind == "length"


def test_velox_without_sparse_names_the_package(tmp_path, detectors, monkeypatch):
    import importlib.util

    _velox(tmp_path / "si.emd", {"HAADF": detectors["HAADF"]}, 1e-10, with_spectrum_image=True)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sparse" else real_find_spec(name, *a))
    with pytest.raises(EMInputError) as e:
        read_image(tmp_path / "si.emd")
    assert "sparse" in _one_line(e) and "em-noise[formats]" in _one_line(e) and "corrupt" not in _one_line(e)


def test_hyperspy_hspy_file_keeps_its_scale(tmp_path):
    hs = pytest.importorskip("hyperspy.api")
    data = np.arange(48 * 40, dtype=np.float32).reshape(48, 40)
    sig = hs.signals.Signal2D(data)
    sig.metadata.General.title = "HAADF"
    for ax in sig.axes_manager.signal_axes:
        ax.scale, ax.units = 0.02, "nm"
    path = tmp_path / "frame.hspy"
    sig.save(path)

    img = read_image(path)

    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size_A == pytest.approx(0.2)
