import numpy as np
import pytest
from em_noise.errors import EMInputError
from em_noise.metrics import find_peaks, match_positions
from em_noise.reference import hrtem_reference
from em_noise.synth import SynthConfig, synthesize


def test_reference_peaks_are_the_samples_columns():
    cfg = SynthConfig(mode="hrtem", size=128, structures={"regular": 1.0}, lattices=("bcc_w_110",),
                      pixel_size_A=(0.15, 0.15), defocus_nm=(-60.0, -60.0), aperture_inv_A=(0.9, 0.9))
    s = synthesize(cfg, 3)
    ref = hrtem_reference(cfg, 3)
    assert ref.shape == s["clean"].shape and ref.dtype == np.float32
    peaks = np.asarray(find_peaks((ref - ref.min()) / np.ptp(ref), min_distance_px=3, threshold_rel=0.5))
    assert match_positions(peaks, s["positions"], 1.0)["f1"] >= 0.9
    # the recorded frame at 60 nm underfocus is delocalised: its peaks are not the columns
    img = (s["clean"] - s["clean"].min()) / np.ptp(s["clean"])
    best = max(match_positions(np.asarray(find_peaks(im, min_distance_px=3, threshold_rel=0.5)), s["positions"],
                               1.0)["f1"] for im in (img, 1 - img))
    assert best < 0.7


def test_reference_passes_only_the_samples_aperture():
    cfg = SynthConfig(mode="hrtem", size=128, aperture_inv_A=(0.3, 0.8), pixel_size_A=(0.2, 0.2))
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(128, 0.2), np.fft.fftfreq(128, 0.2)))  # 1/Å
    taper = np.outer(np.hanning(128), np.hanning(128))
    for seed in (0, 1):
        k_ap = synthesize(cfg, seed)["meta"]["imaging"]["aperture_inv_A"]
        ref = hrtem_reference(cfg, seed)
        spec = np.abs(np.fft.fft2((ref - ref.mean()) * taper)) ** 2
        inside = spec[(k > 0) & (k < k_ap)].mean()
        assert spec[k > 1.15 * k_ap].mean() < 1e-4 * inside  # nothing beyond the sample's own aperture
        assert spec[(k > 0.8 * k_ap) & (k < k_ap)].mean() > 0.1 * inside  # and up to it


def test_reference_refuses_stem():
    with pytest.raises(EMInputError, match="hrtem"):
        hrtem_reference(SynthConfig(mode="haadf"), 0)
