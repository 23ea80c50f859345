"""Typed, versioned noise parameters (em_noise.params) and their priors (em_noise.priors, sfin_paper)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from em_noise.errors import EMInputError
from em_noise.params import (
    RANGES,
    BfParams,
    HaadfParams,
    HrtemParams,
    default_params,
    parse_params,
    read_params,
    write_params,
)
from em_noise.priors import CalibratedPrior, EmNoisePrior, sample_noise_params
from em_noise.sfin_paper import SfinPaperPrior, structures

V1_FILE = {  # as `em-noise calibrate` wrote it before version 2
    "schema": "em-noise/noise-params", "version": 1, "mode": "haadf",
    "background": {"offset": 13.96, "amplitude": 45.24, "scale_px": 100.0, "octaves": 6, "persistence": 0.5,
                   "lacunarity": 2.0},
    "scan": {"k": 0.1697, "b": 3.4, "knot_spacing_px": 10.2, "g_max": 80.0},
    "pointwise": {"k": 0.01122, "b": 0.5672, "lam": 0.04},
    "dose_e_per_A2": None, "read_sigma": 0.0, "jitter_px": 0.0,
    "calibration": {"method": "em_noise.calibrate", "image_shape": [256, 256], "standard_error": {"scan.k": 0.0035},
                    "unidentified": ["pointwise.lam", "scan.b"]},
    "source": "/tmp/s/0000_noisy.tif",
}


def test_a_version_1_file_still_loads(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(V1_FILE))
    p = read_params(path)
    assert isinstance(p, HaadfParams) and p.version == 2
    assert (p.scan.k, p.pointwise.b, p.background.offset) == (0.1697, 0.5672, 13.96)
    assert p.scan.knot_spacing_px == 10.0  # the same 26 knots on 256 px, in the published formula's terms
    assert p.calibration["unidentified"] == ["pointwise.lam", "scan.b"] and p.source == V1_FILE["source"]
    hrtem = {"schema": "em-noise/noise-params", "version": 1, "mode": "hrtem", "column": {"sigma": 1.1},
             "pointwise": {"k": 0.004, "b": 3.6}, "dose_e_per_A2": 2964.0, "mtf_sigma_px": None}
    assert parse_params(hrtem).mtf_sigma_px == 0.0


def test_write_then_read_gives_the_same_model(tmp_path):
    p = default_params("bf").replace(**{"pointwise.b": -1.5, "scan.k": 0.05})
    path = write_params(tmp_path / "p.json", p)
    assert read_params(path) == p
    assert json.loads(path.read_text())["version"] == 2


@pytest.mark.parametrize(("mode", "key", "value", "needle"), [
    ("haadf", "read_sigma", -2.0, "read_sigma = -2.0 is outside the allowed range [0, 255]"),
    ("bf", "pointwise.lam", 50.0, "pointwise.lam = 50.0 is outside the allowed range [-1, 2]"),
    ("hrtem", "column.sigma", -0.5, "column.sigma = -0.5 is outside the allowed range [0, 255]"),
    ("hrtem", "mtf_sigma_px", -1.0, "mtf_sigma_px = -1.0 is outside the allowed range [0, 10]"),
    ("hrtem", "pointwise.b", -3.0, "pointwise.b = -3.0 is outside the allowed range [0, 255]"),
    ("haadf", "dose_e_per_A2", 0.0, "dose_e_per_A2"),
    ("haadf", "scan.b", "4.4", "scan.b must be a finite number"),
    ("bf", "detector.quantize", 1, "detector.quantize must be true or false"),
])
def test_a_file_with_an_impossible_value_is_refused_naming_file_key_and_range(tmp_path, mode, key, value, needle):
    data = default_params(mode).to_dict()
    group, _, name = key.rpartition(".")
    (data[group] if group else data)[name] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(EMInputError) as err:
        read_params(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and needle in msg and "\n" not in msg


def test_the_mode_picks_the_model_and_a_wrong_mode_is_refused():
    assert type(parse_params({"mode": "bf", "scan": {"k": 0.1, "b": 5.0}, "pointwise": {"k": 0, "b": 1,
                                                                                          "lam": 0.3}})) is BfParams
    assert type(parse_params(default_params("hrtem").to_dict())) is HrtemParams
    with pytest.raises(EMInputError, match="for mode 'hrtem', not 'haadf'"):
        parse_params(default_params("hrtem").to_dict(), mode="haadf")


@pytest.mark.parametrize("mode", ["haadf", "bf"])
def test_every_published_prior_draw_is_valid_including_negative_pointwise_b(mode):
    """The published draws are unclipped: b < 0 (scale floored at 0) and λ < 0 occur and must pass the ranges."""
    rng = np.random.default_rng(0)
    draws = [SfinPaperPrior(mode).sample(rng) for _ in range(3000)]
    b = np.array([d.pointwise.b for d in draws])
    lam = np.array([d.pointwise.lam for d in draws])
    assert (b < 0).any()
    if mode == "bf":
        assert (lam < 0).any()
    _, pri = structures(mode)
    for values, (mean, sd) in ((np.array([d.scan.k for d in draws]), pri[4:6]), (b, pri[10:12]), (lam, pri[12:14])):
        assert values.mean() == pytest.approx(mean, abs=4 * sd / np.sqrt(len(draws)))
        assert values.std() == pytest.approx(sd, rel=0.06)
    offsets = {d.background.offset for d in draws}
    assert offsets == set(map(float, range(51)))  # U{0..50}, integers
    assert min(d.background.amplitude for d in draws) == 50 and max(d.background.amplitude for d in draws) == 100
    lo, hi = RANGES["stem"]["pointwise.lam"]
    assert lo < lam.min() and lam.max() < hi


@pytest.mark.parametrize("mode", ["haadf", "bf", "hrtem"])
def test_priors_are_sampler_objects_giving_models(mode):
    rng = np.random.default_rng(1)
    base = EmNoisePrior(mode).sample(rng)
    around = CalibratedPrior(base).sample(rng)
    assert type(around) is type(base) and around.mode == mode
    assert sample_noise_params(mode, np.random.default_rng(2)) == EmNoisePrior(mode).sample(
        np.random.default_rng(2)).to_dict()


def test_synth_noise_option_goes_through_the_same_reader(tmp_path, capsys):
    from em_noise.cli import main

    data = default_params("bf").to_dict()
    data["pointwise"]["lam"] = 50.0
    (tmp_path / "p.json").write_text(json.dumps(data))
    assert main(["synth", "--mode", "bf", "--count", "1", "--noise", str(tmp_path / "p.json"),
                 "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "p.json" in err[0] and "pointwise.lam" in err[0] and "[-1, 2]" in err[0]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_training_noise_option_goes_through_the_same_reader(tmp_path):
    pytest.importorskip("lightning")
    from em_noise.training import SynthDataModule

    data = default_params("hrtem").to_dict()
    data["column"]["sigma"] = -1.0
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(EMInputError, match=r"column\.sigma = -1\.0 is outside the allowed range \[0, 255\]"):
        SynthDataModule(mode="hrtem", target="denoise", noise=str(tmp_path / "p.json")).noise_params()
