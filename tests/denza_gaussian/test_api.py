"""Python API on numpy arrays (and hyperspy-like signals); held-out γ from training views only."""
from __future__ import annotations

import numpy as np
import pytest
from denza_gaussian import reconstruct
from denza_gaussian.phantoms import make_phantom, simulate_tilts, tilt_angles


@pytest.fixture(scope="module")
def arrays():
    angles = tilt_angles(9, 60.0)
    sim = simulate_tilts(make_phantom("faceted", 24, seed=0), angles, peak_counts=400.0, gain_jitter=0.1,
                         background_counts=4.0, seed=1)
    return sim["noisy"], angles


def test_reconstruct_on_arrays(arrays):
    tilts, angles = arrays
    vol, report = reconstruct(tilts, angles, iterations=20, lambda_tv=1.0, pixel_size_A=2.0)
    assert vol.shape == (24, 24, 24) and np.isfinite(vol).all()
    assert report["voxel_size_A"] == 2.0 and len(report["images"]) == 9 and report["method"] == "denza"
    vol_s, rep_s = reconstruct(tilts, angles, method="sirt", iterations=10)
    assert vol_s.shape == (24, 24, 24) and rep_s["iterations"] == 10


def test_heldout_gamma_never_reads_a_heldout_view(arrays):
    tilts, angles = arrays
    held = np.arange(9) % 3 == 2
    kw = dict(iterations=20, lambda_tv=1.0, holdout=3)
    _, a = reconstruct(tilts, angles, **kw)
    changed = tilts.copy()
    changed[held] = changed[held] * 2.5 + 7.0  # held-out views brighter, with another background
    _, b = reconstruct(changed, angles, **kw)
    assert [e["heldout"] for e in a["images"]] == held.tolist()
    assert [e["gamma"] for e in a["images"]] == [e["gamma"] for e in b["images"]]
    assert a["heldout"]["psnr_db"] != b["heldout"]["psnr_db"]  # the held-out data did change
    g = np.array([e["gamma"] for e in a["images"]])
    expected = np.exp(np.interp(angles[held], angles[~held], np.log(g[~held])))
    np.testing.assert_allclose(g[held], expected, rtol=1e-4)
    assert "interpolated" in a["gamma_source"]


class _Axis:
    def __init__(self, scale, units, axis=None):
        self.scale, self.units, self.axis = scale, units, axis


class _AxesManager:
    def __init__(self, angles):
        self.signal_axes = (_Axis(0.25, "nm"), _Axis(0.25, "nm"))
        self.navigation_axes = (_Axis(15.0, "degrees", np.asarray(angles)),)


class _Signal2D:
    """The attributes of a hyperspy Signal2D that the API reads (hyperspy itself is not a dependency)."""

    def __init__(self, data, angles):
        self.data, self.axes_manager = data, _AxesManager(angles)


def test_reconstruct_accepts_a_hyperspy_like_signal(arrays):
    tilts, angles = arrays
    vol, report = reconstruct(_Signal2D(tilts, angles), method="fbp")
    assert vol.shape == (24, 24, 24) and report["voxel_size_A"] == 2.5
    assert [e["angle_deg"] for e in report["images"]] == pytest.approx(list(angles))


def test_voxel_size_is_reported_at_the_headers_precision():
    from denza_gaussian.api import round_to_float32

    assert round_to_float32(67.19999694824219) == 67.2
    assert round_to_float32(33.6 * 4) == 134.4
