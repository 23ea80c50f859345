"""Real microscope files: the test data that etspy ships in its wheel (NIST public licence), read in place.

HAADF.mrc is an FEI Xplore3D tilt series (77 x 256 x 256, FEI/Agard extended header of 128-byte records,
main-header pixel size 1.0) with its .rawtlt; HAADF.dm3 a DigitalMicrograph tilt series; BF_001.dm3 a DM
image; test_000.mrc a SerialEM stack with its .mdoc.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from em_noise.io import read_image, write_image


def _etspy_data() -> Path:
    spec = importlib.util.find_spec("etspy")  # locates the package without importing it (and hyperspy)
    if spec is None or spec.origin is None:
        pytest.skip("etspy (dev dependency, Python >= 3.11) is not installed")
    return Path(spec.origin).parent / "tests" / "test_data"


@pytest.fixture(scope="module")
def data() -> Path:
    return _etspy_data()


def _mdoc_values(path: Path, key: str) -> list[str]:
    return [line.split("=", 1)[1].strip() for line in path.read_text().splitlines() if line.startswith(f"{key} =")]


@pytest.mark.parametrize("name", ["HAADF.mrc", "HAADF.ali"])
def test_fei_xplore3d_tilt_series(data, name):
    img = read_image(data / name)
    rawtlt = [float(v) for v in (data / "HAADF.rawtlt").read_text().split()]
    assert img.data.shape == (77, 256, 256)
    assert img.metadata["extended_header"] == "FEI/Agard (128-byte records)"
    np.testing.assert_allclose(img.tilt_angles_deg, rawtlt, atol=1e-4)
    assert img.pixel_size_A == pytest.approx(33.6, rel=1e-4)


def test_dm3_tilt_series_gives_its_angles_and_scale(data):
    img = read_image(data / "HAADF.dm3")
    assert img.data.shape == (91, 64, 64)
    assert img.tilt_angles_deg == pytest.approx(list(np.arange(-90.0, 91.0, 2.0)))
    assert img.pixel_size_A == pytest.approx(179.949, rel=1e-5)
    assert img.metadata["signal_title"] == "HAADF_Rebin16"


def test_dm3_image_and_its_scale_through_an_output_tiff(data, tmp_path):
    img = read_image(data / "DM_Series_Test" / "BF_001.dm3")
    assert img.data.shape == (128, 128)
    assert img.pixel_size_A == pytest.approx(191.087, rel=1e-5)
    out = read_image(write_image(tmp_path / "bf.tif", img.data, like=img))
    assert out.pixel_size_A == pytest.approx(img.pixel_size_A, rel=1e-6)


def test_serialem_stack_pixel_size_matches_its_mdoc(data):
    path = data / "SerialEM_MultiTilt_Test" / "test_000.mrc"
    img = read_image(path)
    mdoc = path.with_suffix(".mdoc")
    assert img.data.shape[0] == len(_mdoc_values(mdoc, "TiltAngle"))
    assert img.pixel_size_A == pytest.approx(float(_mdoc_values(mdoc, "PixelSpacing")[0]), rel=1e-6)
    assert img.metadata["extended_header"].startswith("SerialEM")


def test_hyperspy_reads_an_output_tiffs_scale(data, tmp_path):
    _etspy_data()
    hs = pytest.importorskip("hyperspy.api")
    img = read_image(data / "HAADF.dm3")
    path = write_image(tmp_path / "series.tif", img.data, like=img, provenance={"model": "test"})
    s = hs.load(path)
    for axis in s.axes_manager.signal_axes:
        assert axis.units == "µm"
        assert axis.scale == pytest.approx(img.pixel_size_A / 1e4, rel=1e-6)
    assert s.data.shape == img.data.shape
