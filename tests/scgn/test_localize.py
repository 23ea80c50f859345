"""Column detectors and the lattice gate of scgn.localize on hand-made maps and synthetic frames (no network)."""
import numpy as np
import pytest
from scgn.localize import (
    AGREEMENT_MIN,
    LATTICE_FRACTION,
    LATTICE_WINDOW_PX,
    detect_columns,
    lattice_map,
    locate_columns,
    map_agreement,
)


def _spots(xy, shape=(64, 64), sigma=1.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)) for x, y in xy)


MAP_XY = [(12, 12), (12, 40), (40, 12), (40, 40)]
FRAME_XY = [(13, 13), (13, 41), (41, 13), (41, 41)]  # the frame's columns, 1 px off the map's (more precise)


def _found(pos):
    return sorted(map(tuple, np.round(pos).astype(int).tolist()))


def test_auto_takes_the_frame_peaks_of_the_contrast_the_map_shows():
    amap = _spots(MAP_XY)
    dark = 100.0 - 50.0 * _spots(FRAME_XY)
    assert map_agreement(amap, dark) < -AGREEMENT_MIN
    assert _found(detect_columns(amap, dark, "auto")) == sorted(FRAME_XY)
    assert _found(detect_columns(amap, 200.0 - dark, "auto")) == sorted(FRAME_XY)  # bright columns


def test_auto_drops_frame_peaks_where_the_map_shows_no_column():
    """The frame also peaks in an amorphous matrix; auto keeps a frame peak only next to a peak of the map."""
    amap = _spots(MAP_XY)
    extra = [(26, 26), (54, 54)]  # dark spots of the frame with no column in the map
    dark = 100.0 - 50.0 * _spots(FRAME_XY + extra)
    assert map_agreement(amap, dark) < -AGREEMENT_MIN
    assert _found(detect_columns(amap, dark, "auto")) == sorted(FRAME_XY)
    assert _found(detect_columns(amap, dark, "dark")) == sorted(FRAME_XY + extra)  # no gate without auto
    table = locate_columns(dark, dark, amap, contrast="auto", lattice=False)
    assert _found(table.xy_px) == sorted(FRAME_XY)


def test_auto_falls_back_to_the_map_peaks_where_map_and_frame_disagree():
    amap = _spots(MAP_XY)
    frame = np.random.default_rng(0).normal(100.0, 5.0, amap.shape)
    assert abs(map_agreement(amap, frame)) < AGREEMENT_MIN
    assert _found(detect_columns(amap, frame, "auto", map_detection={"min_distance_px": 2, "threshold": 0.3})) == \
        sorted(MAP_XY)


def test_map_detectors_need_a_map():
    with pytest.raises(ValueError):
        detect_columns(None, np.zeros((8, 8)), "auto")
    with pytest.raises(ValueError):
        detect_columns(None, np.zeros((8, 8)), "sideways")


# ------------------------------------------------------------------------------------- the lattice gate (no network)


def _hrtem(kind: str, dose: float, seed: int, size: int = 256):
    """(noisy, clean) HRTEM frames: a crystal, an amorphous film (no nucleus), vacuum, or interference fringes."""
    from em_noise.noise import apply_noise
    from em_noise.priors import sample_noise_params
    from em_noise.synth import SynthConfig, synthesize

    if kind in ("crystal", "amorphous"):
        extra = ({"structures": {"regular": 1.0}, "lattices": ("bcc_w_110",), "pixel_size_A": (0.15, 0.15),
                  "cs_mm": (0.0, 0.0), "defocus_nm": (-20.0, -20.0), "aperture_inv_A": (0.5, 0.5)}
                 if kind == "crystal" else {"structures": {"nucleation": 1.0}, "nuclei": (1, 1),
                                            "nucleus_radius_frac": (0.01, 0.01)})
        s = synthesize(SynthConfig(mode="hrtem", size=size, dose_e_per_A2=(dose, dose), **extra), [4242, seed])
        return s["noisy"], s["clean"]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    clean = np.full((size, size), 128.0)
    if kind == "fringes":  # a hologram's biprism fringes: one periodicity, gently bent, under an envelope
        period, th = rng.uniform(6, 20), rng.uniform(0, np.pi)
        u = xx * np.cos(th) + yy * np.sin(th) + 0.0001 * (xx - size / 2) ** 2
        env = np.exp(-((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (2 * (0.6 * size) ** 2))
        clean = clean + 40 * env * np.cos(2 * np.pi * u / period)
    p = sample_noise_params("hrtem", rng)
    p["dose_e_per_A2"] = dose
    return np.asarray(apply_noise(clean.astype(np.float32), "hrtem", p, rng, pixel_size_A=0.2)), clean


@pytest.mark.parametrize("kind", ["amorphous", "vacuum", "fringes"])
@pytest.mark.parametrize("dose", [200.0, 5000.0])
def test_no_lattice_without_a_lattice(kind, dose):
    """Even given the clean image as the 'denoised' frame, vacuum, amorphous film and fringes show no lattice."""
    for seed in range(2):
        noisy, clean = _hrtem(kind, dose, seed)
        assert lattice_map(clean, noisy).max() < LATTICE_FRACTION, (kind, dose, seed)


def test_a_crystal_shows_a_lattice_and_the_input_must_confirm_it():
    noisy, clean = _hrtem("crystal", 2000.0, 0)
    assert (lattice_map(clean, noisy) >= LATTICE_FRACTION).mean() > 0.9
    vac, _ = _hrtem("vacuum", 2000.0, 0)
    assert lattice_map(clean, vac).max() < LATTICE_FRACTION  # a lattice in the output only is not believed


def test_columns_are_kept_only_where_the_lattice_is():
    """A frame whose left half is a crystal and right half vacuum: candidate peaks everywhere, columns on the left."""
    noisy, clean = _hrtem("crystal", 2000.0, 1)
    vac, vclean = _hrtem("vacuum", 2000.0, 1)
    noisy[:, 128:], clean[:, 128:] = vac[:, 128:], vclean[:, 128:] + 0.01 * np.random.default_rng(0).normal(
        size=(256, 128))
    table = locate_columns(noisy, clean, contrast="dark", min_distance_px=3, threshold=0.0)
    assert len(table) > 50 and table.xy_px[:, 0].max() < 128 + LATTICE_WINDOW_PX / 2
    assert np.all((table.confidence > 0) & (table.confidence <= 1))
    everything = locate_columns(noisy, clean, contrast="dark", min_distance_px=3, threshold=0.0, lattice=False)
    assert (everything.xy_px[:, 0] > 160).sum() > 50  # the vacuum's noise peaks, which the gate removes


def test_frame_scope_keeps_a_frame_with_a_lattice_whole_and_drops_one_without():
    """Scope 'frame': the half-crystal frame keeps the vacuum half's peaks too (all or nothing per frame), with the
    frame's largest coverage as their coherence; a vacuum frame keeps none."""
    noisy, clean = _hrtem("crystal", 2000.0, 1)
    vac, vclean = _hrtem("vacuum", 2000.0, 1)
    vclean = vclean + 0.01 * np.random.default_rng(0).normal(size=vclean.shape)
    noisy[:, 128:], clean[:, 128:] = vac[:, 128:], vclean[:, 128:]
    column = locate_columns(noisy, clean, contrast="dark", min_distance_px=3, threshold=0.0)
    frame = locate_columns(noisy, clean, contrast="dark", min_distance_px=3, threshold=0.0, scope="frame")
    everything = locate_columns(noisy, clean, contrast="dark", min_distance_px=3, threshold=0.0, lattice=False)
    assert len(column) < len(frame) == len(everything)
    assert np.all(frame.confidence > 0) and np.all(frame.confidence <= 1)
    assert len(locate_columns(vac, vclean, contrast="dark", min_distance_px=3, threshold=0.0, scope="frame")) == 0
    with pytest.raises(ValueError, match="scope"):
        locate_columns(noisy, clean, contrast="dark", scope="window")
