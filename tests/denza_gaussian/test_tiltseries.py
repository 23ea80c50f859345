"""Tilt files and conventions, every input error, preprocessing and alignment."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from denza_gaussian.align import align
from denza_gaussian.tiltseries import (
    bin_stack,
    check_series,
    load_tilt_series,
    parse_angles,
    read_angle_file,
    subtract_background,
    to_user_axes,
)
from em_noise.errors import EMInputError


def test_tlt_is_read_beside_the_stack(series_file):
    path, angles, _ = series_file
    s = load_tilt_series(path)
    assert s.angle_source == "tilts.tlt"
    np.testing.assert_allclose(s.angles_deg, angles, atol=1e-3)
    assert s.pixel_size_A == pytest.approx(3.0)


def test_rawtlt_is_used_when_there_is_no_tlt(tmp_path, make_series):
    path, angles, _ = make_series(tmp_path, angle_ext=".rawtlt")
    s = load_tilt_series(path)
    assert s.angle_source == "tilts.rawtlt"


def test_tlt_wins_over_rawtlt(tmp_path, make_series):
    path, angles, _ = make_series(tmp_path, angle_ext=".tlt")
    path.with_suffix(".rawtlt").write_text("".join(f"{a + 1:.3f}\n" for a in angles))
    assert load_tilt_series(path).angle_source == "tilts.tlt"


def test_angle_range_and_file_options(tmp_path):
    a, _ = parse_angles("-60:60:15")
    np.testing.assert_allclose(a, np.arange(-60, 61, 15))
    f = tmp_path / "a.txt"
    f.write_text("1.5\n\n 2.5  extra\n")
    np.testing.assert_allclose(read_angle_file(f), [1.5, 2.5])
    with pytest.raises(EMInputError, match="not an angle"):
        f.write_text("1\nabc\n")
        read_angle_file(f)
    with pytest.raises(EMInputError):
        parse_angles("10:0:5")


def test_tif_stack_with_angle_range(tmp_path):
    data = np.random.default_rng(0).random((5, 16, 20)).astype(np.float32)
    tifffile.imwrite(tmp_path / "s.tif", data)
    s = load_tilt_series(tmp_path / "s.tif", angles="-40:40:20")
    assert s.data.shape == (5, 16, 20) and s.angles_deg[0] == -40


def test_tilt_axis_x_transposes_and_back(tmp_path):
    data = np.random.default_rng(0).random((5, 16, 20)).astype(np.float32)
    tifffile.imwrite(tmp_path / "s.tif", data)
    s = load_tilt_series(tmp_path / "s.tif", angles="-40:40:20", tilt_axis="x")
    assert s.data.shape == (5, 20, 16)
    np.testing.assert_array_equal(to_user_axes(s, s.data, is_volume=False), data)


def test_decreasing_angles_are_accepted_and_order_restored(tmp_path):
    data = np.random.default_rng(0).random((5, 16, 16)).astype(np.float32)
    tifffile.imwrite(tmp_path / "s.tif", data)
    s = load_tilt_series(tmp_path / "s.tif", angles="40:-40:-20")
    assert s.angles_deg[0] == -40
    np.testing.assert_array_equal(s.data[0], data[-1])
    np.testing.assert_array_equal(to_user_axes(s, s.data, is_volume=False), data)


def test_missing_angles_is_an_error(tmp_path, make_series):
    path, _, _ = make_series(tmp_path, angle_ext="")
    with pytest.raises(EMInputError, match="no tilt angles"):
        load_tilt_series(path)


GOOD = np.random.default_rng(1).random((5, 8, 8)).astype(np.float32) + 0.1
ANG = np.array([-40.0, -20.0, 0.0, 20.0, 40.0])


@pytest.mark.parametrize(
    "data, angles, message",
    [
        (GOOD, ANG[:4], "4 tilt angles for 5 images"),
        (GOOD, np.array([-40.0, -20.0, -20.0, 20.0, 40.0]), "duplicate tilt angle"),
        (GOOD, np.array([-40.0, 20.0, 0.0, -20.0, 40.0]), "not sorted"),
        (GOOD, np.array([-90.0, -20.0, 0.0, 20.0, 40.0]), "must be < 90"),
        (GOOD, np.array([-40.0, np.nan, 0.0, 20.0, 40.0]), "non-finite"),
        (np.where(np.arange(5)[:, None, None] == 2, np.nan, GOOD), ANG, "image 2 contains non-finite"),
        (GOOD[:2], ANG[:2], "at least 3"),
        (np.concatenate([GOOD[:3], np.ones((2, 8, 8), np.float32)]), ANG, "image 3 is constant"),
        (np.zeros((5, 0, 8), np.float32), ANG, "empty"),
        (GOOD[0], ANG, "expected a tilt series"),
    ],
)
def test_input_errors(data, angles, message):
    with pytest.raises(EMInputError, match=message) as err:
        check_series("x.mrc", data, angles)
    assert "\n" not in str(err.value) and str(err.value).startswith("x.mrc: ")


def test_binning_and_background():
    d = np.ones((3, 10, 12), np.float32) * 5.0
    d[:, 4:6, 4:6] += 10
    b = bin_stack(d, 2)
    assert b.shape == (3, 5, 6)
    assert b.mean() == pytest.approx(d.mean())
    bg = subtract_background(d)
    assert np.median(bg) == 0.0 and bg.max() == pytest.approx(10.0)


def _moved_series(n_views=15, size=48, shifts_px=4.0, rotation_deg=0.0, seed=3, kind="cluster"):
    from denza_gaussian.align import transform
    from denza_gaussian.phantoms import make_phantom, simulate_tilts, tilt_angles

    angles = tilt_angles(n_views, 60.0)
    clean = simulate_tilts(make_phantom(kind, size, seed=2), angles, peak_counts=None)["clean"]
    true = np.random.default_rng(seed).uniform(-shifts_px, shifts_px, size=(n_views, 2))
    true[np.argmin(np.abs(angles))] = 0
    # the microscope's view: the ideal one rotated by the axis angle, then shifted
    moved = np.stack([transform(c, t, rotation_deg) for c, t in zip(clean, true)])
    return angles, clean, true, moved


def _gauge_free_error(shifts, true, angles):
    """Largest error of recovered shifts after removing what a tilt series cannot tell: a common shift along the
    axis and, across it, the object's 3-D position (a + b cos θ + c sin θ)."""
    from denza_gaussian.align import gauge_free

    return float(np.abs(gauge_free(shifts + true, angles)).max())


def test_alignment_recovers_known_shifts():
    from denza_gaussian.align import coarse_shifts

    angles, clean, true, moved = _moved_series()
    al = align(moved, angles)
    assert _gauge_free_error(al.shifts, true, angles) < 0.25
    # projection matching improves on neighbour cross-correlation, which drifts
    assert _gauge_free_error(al.shifts, true, angles) < 0.5 * _gauge_free_error(coarse_shifts(moved, angles), true,
                                                                                 angles)
    assert abs(al.rotation_deg) <= 0.5
    cy, cx = al.crop
    assert al.data.shape == moved[:, cy: 48 - cy, cx: 48 - cx].shape


@pytest.mark.parametrize("rotation_deg", [3.0, -2.0])
def test_alignment_estimates_the_tilt_axis_angle(rotation_deg):
    angles, clean, true, moved = _moved_series(size=64, shifts_px=2.0, rotation_deg=rotation_deg, seed=5)
    al = align(moved, angles)
    assert al.rotation_deg == pytest.approx(-rotation_deg, abs=0.5)  # undoing a rotation by ψ takes -ψ
    assert _gauge_free_error(al.shifts, true, angles) < 0.5


@pytest.mark.parametrize("psi", [0.0, 2.5, -4.0])
def test_crop_leaves_no_filled_in_pixel(psi):
    from denza_gaussian.align import crop_margins, transform

    shifts = np.random.default_rng(1).uniform(-3, 3, size=(5, 2))
    ones = np.ones((40, 56), np.float32)
    cy, cx = crop_margins(ones.shape, shifts, psi)
    for s in shifts:
        out = transform(ones, s, psi, mode="constant")[cy: 40 - cy, cx: 56 - cx]
        assert out.min() > 1 - 1e-5


def test_serialem_mdoc_gives_angles_and_pixel_size(tmp_path, make_series):
    path, angles, _ = make_series(tmp_path, angle_ext="")
    sections = "".join(f"[ZValue = {i}]\nTiltAngle = {a:.2f}\nExposureTime = 1\n\n" for i, a in enumerate(angles))
    Path(f"{path}.mdoc").write_text(f"PixelSpacing = 2.62\nVoltage = 300\nImageFile = {path.name}\n\n{sections}")
    s = load_tilt_series(path)
    assert s.angle_source == "tilts.mrc.mdoc"
    np.testing.assert_allclose(s.angles_deg, np.round(angles, 2))
    assert s.pixel_size_A == pytest.approx(3.0)  # the image header's pixel size wins over the mdoc's


def test_mdoc_pixel_size_replaces_a_placeholder_and_errors_are_one_line(tmp_path):
    from em_noise.io import write_image

    data = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    write_image(tmp_path / "s.mrc", data, volume=False)
    (tmp_path / "s.mdoc").write_text("PixelSpacing = 4.5\n[ZValue = 0]\nTiltAngle = -30\n[ZValue = 1]\n"
                                     "TiltAngle = 0\n[ZValue = 2]\nTiltAngle = 30\n")
    s = load_tilt_series(tmp_path / "s.mrc")
    assert s.angles_deg.tolist() == [-30.0, 0.0, 30.0] and s.pixel_size_A == pytest.approx(4.5)
    (tmp_path / "s.mdoc").write_text("[ZValue = 0]\nTiltAngle = abc\n")
    with pytest.raises(EMInputError, match="not a number"):
        load_tilt_series(tmp_path / "s.mrc")
    (tmp_path / "s.mdoc").write_text("[ZValue = 0]\nTiltAngle = 1\n[ZValue = 2]\nTiltAngle = 2\n")
    with pytest.raises(EMInputError, match="ZValues"):
        load_tilt_series(tmp_path / "s.mrc")


def test_read_mdoc_on_a_real_serialem_file():
    """etspy's SerialEM test data (NIST public licence), read in place: sections with [T = ...] headers too."""
    import importlib.util

    from denza_gaussian.tiltseries import read_mdoc

    spec = importlib.util.find_spec("etspy")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("etspy (dev dependency, Python >= 3.11) is not installed")
    mdoc = Path(next(iter(spec.submodule_search_locations))) / "tests/test_data/SerialEM_MultiTilt_Test/test_000.mdoc"
    angles, pixel = read_mdoc(mdoc)
    assert angles.tolist() == pytest.approx([-0.000488, -0.000488]) and pixel == pytest.approx(7.88)


def test_alignment_rotates_no_noisy_series_that_needs_no_rotation():
    from denza_gaussian.tiltseries import load_tilt_series

    example = Path(__file__).resolve().parents[2] / "examples" / "nanoparticle_tilts.mrc"
    s = load_tilt_series(example)  # simulated with Poisson noise, tilt axis exactly along y
    al = align(subtract_background(s.data), s.angles_deg)
    search = al.rounds[-1]["rotation_search"]
    assert al.rotation_deg == 0.0 and not search["applied"], search
