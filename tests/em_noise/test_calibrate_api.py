"""em_noise.calibrate as a Python API: any intensity scale, typed result, hyperspy signals, progress, limits."""
from __future__ import annotations

import json

import em_noise
import numpy as np
import pytest
from em_noise.calibrate import calibrate_frames
from em_noise.noise import apply_noise, scan_std, tukey_std
from em_noise.params import HaadfParams, default_params
from em_noise.synth import SynthConfig, synthesize

SCALE_TOLERANCE = 0.10  # noise σ in the image's units, at any gain and offset (README)


def noise_in_image_units(p, levels):
    """Pointwise σ at ``levels`` (image units), pointwise ⊕ scan σ at g = 0 and at saturation, background range."""
    s, o = p.intensity.scale, p.intensity.offset
    if p.mode == "hrtem":
        return [s * max(p.pointwise.k * (i - o) / s + p.pointwise.b, 0.0) for i in levels] + [s * p.column.sigma]
    pw = [s * tukey_std(p.pointwise.lam) * max(p.pointwise.k * (i - o) / s + p.pointwise.b, 0.0) for i in levels]
    scans = [s * scan_std(g, p.scan.k, p.scan.b) for g in (0.0, 80.0)]
    return pw + [float(np.hypot(pw[1], sc)) for sc in scans] + [s * p.background.amplitude]


@pytest.mark.parametrize(("mode", "index", "maps"), [
    ("haadf", 1, ((1000.0, 0.0), (1000.0, 5e4), (0.01, -3.0))),
    ("bf", 0, ((1000.0, 0.0), (1000.0, 5e4))),
    ("hrtem", 0, ((1000.0, 0.0), (0.01, 0.0))),  # HRTEM: gain only (shot noise counts from zero intensity)
])
def test_same_noise_in_the_image_units_at_any_gain_and_offset(mode, index, maps):
    frame = synthesize(SynthConfig(mode=mode), [1, index])["noisy"].astype(np.float64)
    levels = np.percentile(frame, [10, 50, 90])
    ref = np.array(noise_in_image_units(em_noise.calibrate(frame, mode), levels))
    for gain, offset in maps:
        p = em_noise.calibrate(frame * gain + offset, mode)
        assert p.intensity.scale != 1.0  # fitted on the stated internal scale, not the image's
        got = np.array(noise_in_image_units(p, levels * gain + offset))
        np.testing.assert_allclose(got, gain * ref, rtol=SCALE_TOLERANCE, atol=1e-6 * gain)


def test_an_image_on_the_model_scale_is_fitted_as_it_is_and_a_stack_on_one_scale():
    frame = synthesize(SynthConfig(mode="haadf"), [1, 3])["noisy"]
    p = em_noise.calibrate(frame, "haadf")
    assert isinstance(p, HaadfParams) and (p.intensity.scale, p.intensity.offset) == (1.0, 0.0)
    assert p.detector.quantize  # an 8-bit frame: the detector's clip and truncation
    assert json.loads(p.to_json())["intensity"] == {"scale": 1.0, "offset": 0.0}
    stack = np.stack([frame, frame[::-1]]) * 40.0 + 7.0
    combined = calibrate_frames(stack, "haadf")
    alone = em_noise.calibrate(stack[0], "haadf")
    assert combined.intensity == alone.intensity and combined.calibration["frames"] == 2
    assert not alone.detector.quantize


def test_synthesis_from_a_calibration_gives_the_image_units():
    frame = synthesize(SynthConfig(mode="haadf"), [1, 3])["noisy"].astype(np.float64) * 1000.0 + 5e4
    params = em_noise.calibrate(frame, "haadf")
    sample = synthesize(SynthConfig(mode="haadf", noise=params), 0)
    lo, hi = np.percentile(sample["noisy"], [1, 99])
    assert 2e4 < lo < hi < 4e5  # the frame's units (it spans 5e4–3.05e5), not 0–255
    assert sample["clean"].min() >= params.intensity.offset - 1e-3 * params.intensity.scale  # model 0 in image units


class FakeAxis:
    def __init__(self, scale, units):
        self.scale, self.units = scale, units


class FakeSignal2D:
    """The two attributes of a hyperspy Signal2D that calibrate reads."""

    def __init__(self, data, scale, units):
        self.data = data
        self.axes_manager = type("AM", (), {"signal_axes": (FakeAxis(scale, units), FakeAxis(scale, units))})()


@pytest.mark.parametrize(("units", "pixel_A"), [("nm", 0.15), ("Å", 0.015), ("pm", 1.5e-4), ("px", None)])
def test_a_signal2d_gives_its_pixel_size(units, pixel_A):
    clean = synthesize(SynthConfig(mode="hrtem", size=128), 2)["clean"]
    truth = default_params("hrtem").replace(mtf_sigma_px=0.5, dose_e_per_A2=200.0)
    noisy = apply_noise(clean, "hrtem", truth, np.random.default_rng(0), pixel_size_A=0.15)
    p = em_noise.calibrate(FakeSignal2D(noisy, 0.015, units), "hrtem")
    assert p.pixel_size_A == (pytest.approx(pixel_A) if pixel_A else None)
    assert (p.dose_e_per_A2 is not None) == (pixel_A is not None)


def test_a_real_hyperspy_signal2d():
    hs = pytest.importorskip("hyperspy.api")
    frame = synthesize(SynthConfig(mode="haadf", size=96), 1)["noisy"]
    sig = hs.signals.Signal2D(frame)
    for ax in sig.axes_manager.signal_axes:
        ax.scale, ax.units = 0.02, "nm"
    assert em_noise.calibrate(sig, "haadf").pixel_size_A == pytest.approx(0.2)


def test_progress_bar_goes_to_stderr_only_when_asked(capsys):
    frame = synthesize(SynthConfig(mode="bf", size=96), 1)["noisy"]
    em_noise.calibrate(frame, "bf")
    assert "calibrate" not in capsys.readouterr().err
    em_noise.calibrate(frame, "bf", progress=True)
    out = capsys.readouterr()
    assert "calibrate" in out.err and out.out == ""


def test_a_parameter_at_an_end_of_its_search_range_is_declared_unidentified(tmp_path, capsys):
    """No scan noise at all: std(0) = 0 puts scan b at its lower end 3.4, which gives only a bound."""
    clean = synthesize(SynthConfig(mode="haadf"), [1, 7])["clean"]
    truth = default_params("haadf").replace(**{"scan.k": 0.0, "scan.b": 2.0})
    noisy = apply_noise(clean, "haadf", truth, np.random.default_rng(0))
    p = em_noise.calibrate(noisy, "haadf")
    assert p.scan.b == pytest.approx(3.4)
    assert "scan.b" in p.calibration["at_search_limit"] and "scan.b" in p.calibration["unidentified"]
    from em_noise.cli import main
    from em_noise.io import write_image

    write_image(tmp_path / "f.tif", noisy)
    assert main(["calibrate", str(tmp_path / "f.tif"), "--mode", "haadf"]) == 0
    assert "scan.b" in capsys.readouterr().err
