"""Tests of em_noise.synth / lattices / imaging: determinism, geometry, targets, dataset workers, HRTEM CTF, writer."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from em_noise.errors import EMInputError
from em_noise.imaging import electron_wavelength_A, render_gaussians
from em_noise.lattices import LATTICES, min_distance_points
from em_noise.metrics import find_peaks, match_positions
from em_noise.scaling import normalize, robust_range
from em_noise.synth import PairDataset, SynthConfig, synthesize, write_samples
from pydantic import ValidationError

KEYS = ("noisy", "clean", "target", "atoms", "positions")


@pytest.mark.parametrize("mode", ["haadf", "bf", "hrtem"])
def test_same_seed_gives_identical_sample(mode):
    cfg = SynthConfig(mode=mode, size=96)
    a, b = synthesize(cfg, 7), synthesize(cfg, 7)
    for k in KEYS:
        np.testing.assert_array_equal(a[k], b[k])
    assert a["noise_params"] == b["noise_params"] and a["meta"] == b["meta"]


def test_different_seeds_differ():
    cfg = SynthConfig(size=96)
    a, b = synthesize(cfg, 1), synthesize(cfg, 2)
    assert not np.array_equal(a["noisy"], b["noisy"])
    assert not np.array_equal(a["clean"], b["clean"])


def test_sample_shapes_and_ranges():
    for mode in ("haadf", "bf"):
        s = synthesize(SynthConfig(mode=mode, size=80), 3)
        for k in ("noisy", "clean", "target", "atoms"):
            assert s[k].shape == (80, 80) and s[k].dtype == np.float32
        assert 0.0 <= s["target"].min() and s["target"].max() <= 1.0 and s["target"].max() > 0.5
        assert 0.0 <= s["atoms"].min() and s["atoms"].max() <= 1.0
        assert 0.0 <= s["clean"].min() and s["clean"].max() <= 255.0
        assert s["positions"].ndim == 2 and s["positions"].shape[1] == 2
        json.dumps(s["noise_params"]), json.dumps(s["meta"])  # JSON-able


def test_catalogue_has_at_least_twelve_lattices():
    assert len(LATTICES) >= 12
    for lat in LATTICES.values():
        assert lat.min_spacing_A() > 0.9  # no overlapping columns in any projection


@pytest.mark.parametrize("name", sorted(LATTICES))
def test_each_lattice_renders_columns_at_positions(name):
    cfg = SynthConfig(size=128, lattices=(name,), structures={"regular": 1.0}, cell_px=(26.0, 26.0),
                      column_sigma_A=(0.22, 0.22), jitter_A=(0.0, 0.0), intensity_scatter=0.0)
    s = synthesize(cfg, 11)
    pos = s["positions"]
    inner = pos[(pos.min(1) > 6) & (pos.max(1) < 128 - 7)]
    assert len(inner) >= 8
    found = find_peaks(s["clean"], min_distance_px=2, threshold_rel=0.01, refine=True)
    found = found[(found.min(1) > 6) & (found.max(1) < 128 - 7)]
    m = match_positions(found, inner, max_dist_px=1.0)
    assert m["recall"] >= 0.98 and m["precision"] >= 0.98, (name, m)
    assert m["rms_px"] < 0.35


def test_render_gaussians_peak_value_and_position():
    img = render_gaussians(np.array([[10.0, 20.0], [30.3, 5.0]]), np.array([2.0, 1.0]), (40, 50), 1.5)
    assert img.shape == (40, 50)
    assert img[20, 10] == pytest.approx(2.0, rel=1e-5)
    assert np.unravel_index(np.argmax(img[:12, 25:36]), (12, 11)) == (5, 5)  # nearest pixel to (30.3, 5)
    assert img.sum() == pytest.approx(2 * np.pi * 1.5 ** 2 * 3.0 / 1.0, rel=0.05)  # ~ integral of the spots


def test_atoms_map_marks_every_position():
    s = synthesize(SynthConfig(size=96, structures={"random": 1.0}), 5)
    idx = np.round(s["positions"]).astype(int)
    idx = idx[(idx >= 0).all(1) & (idx < 96).all(1)]
    assert np.all(s["atoms"][idx[:, 1], idx[:, 0]] > 0.55)


@pytest.mark.parametrize("kind", ["regular", "disordered", "random", "nucleation"])
def test_every_structure_kind_builds(kind):
    s = synthesize(SynthConfig(size=96, structures={kind: 1.0}), 4)
    assert s["meta"]["structure"] == kind and len(s["positions"]) > 5
    assert s["meta"]["n_columns"] == len(s["positions"])
    if kind == "nucleation":  # the amorphous matrix is imaged but not listed as columns
        assert s["meta"]["n_matrix_atoms"] > 0
    else:
        assert s["meta"]["n_matrix_atoms"] == 0


def test_random_arrangement_as_amorphous_is_imaged_but_not_listed():
    base = dict(size=96, structures={"random": 1.0})
    cols = synthesize(SynthConfig(**base), 5)
    amor = synthesize(SynthConfig(**base, random_columns=False), 5)
    np.testing.assert_array_equal(cols["clean"], amor["clean"])  # same atoms, same image
    np.testing.assert_array_equal(cols["noisy"], amor["noisy"])
    assert len(cols["positions"]) > 5 and cols["atoms"].max() > 0.5
    assert len(amor["positions"]) == 0 and amor["atoms"].max() == 0.0
    assert amor["meta"]["n_matrix_atoms"] == cols["meta"]["n_columns"]


def test_min_distance_sampling_keeps_its_distance():
    pts = min_distance_points((100, 120), 5.0, 4.0, 1.0, np.random.default_rng(0))
    d = np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1))
    d[np.diag_indices(len(pts))] = np.inf
    assert d.min() >= 4.0
    assert len(pts) > 0.3 * 0.55 * 110 * 130 / 16  # reasonably dense, not a handful of points


def test_pixel_size_follows_cell_px_or_explicit_range():
    s = synthesize(SynthConfig(size=64, lattices=("srtio3_001",), cell_px=(20.0, 20.0)), 0)
    assert s["pixel_size_A"] == pytest.approx(3.905 / 20.0)
    s = synthesize(SynthConfig(size=64, pixel_size_A=(0.3, 0.3)), 0)
    assert s["pixel_size_A"] == pytest.approx(0.3)


def test_bf_has_inverted_contrast():
    cfg = dict(size=96, lattices=("fcc_cu_110",), structures={"regular": 1.0})
    h = synthesize(SynthConfig(mode="haadf", **cfg), 2)
    b = synthesize(SynthConfig(mode="bf", **cfg), 2)
    np.testing.assert_array_equal(h["positions"], b["positions"])
    assert np.corrcoef(h["clean"].ravel(), b["clean"].ravel())[0, 1] < -0.99


def test_hrtem_power_spectrum_has_thon_ring_zeros():
    """Cs = 0: weak-phase contrast ∝ sin(chi), chi = pi λ Δf k², vanishes at chi = -pi and peaks at chi = -pi/2."""
    n, pix = 512, 0.2
    dk = 1.0 / (n * pix)
    lam = electron_wavelength_A(300.0)
    k_zero = 24 * dk  # first zero placed on a Fourier-ring centre
    df = -1.0 / (lam * k_zero ** 2)  # Å
    cfg = SynthConfig(mode="hrtem", size=n, structures={"random": 1.0}, pixel_size_A=(pix, pix),
                      defocus_nm=(df / 10, df / 10), cs_mm=(0.0, 0.0), phase_max_rad=(0.05, 0.05),
                      aperture_inv_A=(2.0, 2.0), focal_spread_nm=(1.0, 1.0), convergence_mrad=(0.02, 0.02))
    win = np.outer(np.hanning(n), np.hanning(n))
    spec = np.zeros((n, n))
    for seed in range(3):
        c = synthesize(cfg, seed)["clean"]
        spec += np.abs(np.fft.fft2((c - c.mean()) * win)) ** 2
    ring = np.round(np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n))) * n).astype(int)
    profile = np.bincount(ring.ravel(), spec.ravel()) / np.bincount(ring.ravel())
    k_max = int(round(k_zero / np.sqrt(2) / dk))  # chi = -pi/2
    assert profile[24] < 0.1 * profile[k_max]
    assert profile[24] < 0.1 * profile[29]  # next maximum, chi = -3 pi / 2 at k = sqrt(1.5) k_zero


def test_hrtem_clean_is_centred_on_128_with_contrast():
    s = synthesize(SynthConfig(mode="hrtem", size=128), 9)
    assert abs(float(s["clean"].mean()) - 128.0) < 5.0
    assert 5.0 < float(s["clean"].std()) < 60.0
    np.testing.assert_allclose(s["target"], normalize(s["clean"], *robust_range(s["noisy"])), rtol=1e-6)


def test_config_validation():
    with pytest.raises(ValidationError):
        SynthConfig(bogus=1)
    with pytest.raises(ValidationError):
        SynthConfig(cell_px=(30.0, 10.0))
    with pytest.raises(ValidationError):
        SynthConfig(lattices=("unobtainium",))
    with pytest.raises(ValidationError):
        SynthConfig(structures={"regular": -1.0})
    with pytest.raises(ValidationError):
        SynthConfig(size=8)
    with pytest.raises(ValidationError):
        SynthConfig(mode="haadf", noise={"mode": "hrtem", "column": {"sigma": 1.0}})


def test_calibrated_noise_base_is_used():
    from em_noise.params import default_params

    base = default_params("haadf").to_dict()
    base["background"]["offset"] = 90.0
    s = synthesize(SynthConfig(size=64, noise=base), 1)
    assert 60.0 < s["noise_params"]["background"]["offset"] < 120.0  # drawn around the calibrated value


def test_dataset_items_and_targets():
    cfg = SynthConfig(size=128)
    ds = PairDataset(cfg, length=3, seed=5, target="denoise", patch=64)
    x, y = ds[1]
    assert x.shape == y.shape == (1, 64, 64) and x.dtype == y.dtype == torch.float32
    s = ds.sample(1)
    lo, hi = robust_range(s["noisy"])  # normalization of the whole image, then the crop
    r0, c0 = ds.patch_origin(1)
    crop = (slice(r0, r0 + 64), slice(c0, c0 + 64))
    np.testing.assert_allclose(x[0].numpy(), normalize(s["noisy"], lo, hi)[crop])
    np.testing.assert_allclose(y[0].numpy(), normalize(s["clean"], lo, hi)[crop])
    _, ye = PairDataset(cfg, 3, 5, "enhance", 64)[1]
    _, yl = PairDataset(cfg, 3, 5, "localize", 64)[1]
    np.testing.assert_array_equal(ye[0].numpy(), s["target"][crop])
    np.testing.assert_array_equal(yl[0].numpy(), s["atoms"][crop])
    assert {ds.patch_origin(i) for i in range(3)} != {(0, 0)}
    full = PairDataset(cfg, 3, 5, "denoise")[1][0]
    np.testing.assert_array_equal(full[0].numpy()[crop], x[0].numpy())
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(EMInputError):
        PairDataset(SynthConfig(mode="hrtem"), 3, target="enhance")


def test_dataset_same_items_with_two_workers():
    ds = PairDataset(SynthConfig(size=64), length=6, seed=3, target="enhance", patch=48)
    main = [ds[i] for i in range(6)]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    got = [t for xb, yb in loader for t in zip(xb, yb)]
    assert len(got) == 6
    for (x0, y0), (x1, y1) in zip(main, got):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_write_samples_files_and_overwrite(tmp_path):
    from em_noise.io import read_image

    cfg = SynthConfig(size=48)
    paths = write_samples(tmp_path / "out", cfg, count=2, seed=4)
    assert len(paths) == 10
    img = read_image(tmp_path / "out" / "0001_noisy.tif")
    ref = synthesize(cfg, [4, 1])
    np.testing.assert_allclose(img.data, ref["noisy"])
    assert img.pixel_size_A == pytest.approx(ref["pixel_size_A"], rel=1e-4)
    meta = json.loads((tmp_path / "out" / "0001.json").read_text())
    np.testing.assert_allclose(meta["positions_xy_px"], ref["positions"], rtol=1e-6)
    assert meta["noise_params"] == ref["noise_params"]
    with pytest.raises(EMInputError):
        write_samples(tmp_path / "out", cfg, count=2, seed=4)
    write_samples(tmp_path / "out", cfg, count=2, seed=4, overwrite=True)


# ------------------------------------------------------------------ the sfin-paper recipe (HeasonLee/SFFN)
def test_published_structure_lists_have_46_entries():
    """haadf.py / bf.py number their structures up to 50 (the issue counted 48), but 22, 23 and 31 are commented
    out and 27 is absent: the published ``*_structures`` lists hold 46."""
    from em_noise.sfin_paper import structures

    (haadf, pri_h), (bf, pri_b) = structures("haadf"), structures("bf")
    assert len(haadf) == len(bf) == 46
    assert [s["name"] for s in haadf] == [s["name"] for s in bf]
    assert haadf[0]["name"] == "Pt_001" and haadf[-1]["name"] == "TiO2_0_0_1__9"
    assert pri_h[4:14] == (0.0982, 0.1, 4.4123, 0.1, 0.05, 0.03, 6.35, 4.04, 0.04, 0.01)
    assert pri_b[4:14] == (0.04, 0.01, 6.2, 1.0, -0.02, 0.02, 17.03, 5.71, 0.38, 0.2)
    sto_h = next(s for s in haadf if s["name"] == "SrTiO3_1_0_0_1__10")["rows"]
    sto_b = next(s for s in bf if s["name"] == "SrTiO3_1_0_0_1__10")["rows"]
    assert sto_h[2, 5] == 119 and sto_b[2, 5] == 220  # the lists differ in a few brightnesses


def test_a_published_structure_tiles_the_field_at_the_given_scale_and_rotation():
    from em_noise.sfin_paper import pattern, structures

    rows = next(s for s in structures("haadf")[0] if s["name"] == "Pt_110")["rows"]  # a = 100, b = 50√2, 2 atoms
    atoms = pattern(rows, (30, 40), scale=0.2, rotation=0.0, brightness=0.5)
    d = 10 * np.sqrt(2)
    expected = [(0, 0), (20, 0), (0, d), (20, d), (0, 2 * d), (20, 2 * d),
                (10, d / 2), (30, d / 2), (10, 1.5 * d), (30, 1.5 * d)]
    np.testing.assert_allclose(sorted(map(tuple, atoms[:, :2])), sorted(expected), atol=1e-4)  # data: 6 digits
    np.testing.assert_allclose(atoms[:, 2], 230 * 0.5)  # row brightness × image brightness
    np.testing.assert_allclose(atoms[:, 3], 7 * 0.2)  # row width × scale (px)
    theta = 0.3
    rot = pattern(rows, (64, 64), scale=0.15, rotation=theta, brightness=0.4)
    c, s = np.cos(theta), np.sin(theta)
    brute = [(i * 15 * c - j * 7.5 * np.sqrt(2) * s + ox, i * 15 * s + j * 7.5 * np.sqrt(2) * c + oy)
             for i in range(-20, 21) for j in range(-20, 21)
             for ox, oy in ((0.0, 0.0), (7.5 * c - 3.75 * np.sqrt(2) * s, 7.5 * s + 3.75 * np.sqrt(2) * c))]
    inside = sorted(p for p in brute if 0 <= p[0] < 64 and 0 <= p[1] < 64)
    np.testing.assert_allclose(sorted(map(tuple, rot[:, :2])), inside, atol=1e-3)


@pytest.mark.parametrize("mode", ["haadf", "bf"])
def test_sfin_paper_sample_follows_the_published_generator(mode):
    s = synthesize(SynthConfig(mode=mode, recipe="sfin-paper"), 4)
    offset = s["meta"]["offset"]
    assert s["meta"]["recipe"] == "sfin-paper" and 0.1 <= s["meta"]["scale_px_per_unit"] <= 0.35
    assert np.all(s["noisy"] == np.floor(s["noisy"])) and 0 <= s["noisy"].min() and s["noisy"].max() <= 255
    assert s["noise_params"]["background"]["offset"] == offset and offset == int(offset)
    if mode == "haadf":
        assert s["clean"].min() >= offset - 1e-4 and s["target"].max() == 1.0
    else:
        assert s["clean"].max() <= 255 - offset + 1e-4 and s["target"].min() == 0.0
    assert np.all(s["target"] * 255 == np.floor(s["target"] * 255 + 1e-4))  # 8-bit targets
    assert len(s["positions"]) == s["meta"]["n_columns"]


def test_em_noise_synth_recipe_option(tmp_path):
    from em_noise.cli import main

    assert main(["synth", "--mode", "bf", "--recipe", "sfin-paper", "--count", "2", "--size", "64",
                 "-o", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "0001.json").read_text())
    assert meta["meta"]["recipe"] == "sfin-paper" and meta["config"]["recipe"] == "sfin-paper"
    assert main(["synth", "--mode", "hrtem", "--recipe", "sfin-paper", "-o", str(tmp_path / "h")]) == 2
