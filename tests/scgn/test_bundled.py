"""The bundled weights: quality on fresh synthetic frames, atom finding on a clean frame and none on lattice-free
frames, the example frame. These run with whatever models ship (replacing the weights re-runs them)."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from em_noise import metrics
from em_noise.controls import lattice_free_frame, resolvable_lattice
from em_noise.io import read_image, write_image
from em_noise.restore import Runner
from em_noise.synth import SynthConfig, make_pair, synthesize
from em_noise.weights import bundled_dir, bundled_names, count_parameters
from scgn.api import load_model, prepare, process
from scgn.cli import denoise_main
from scgn.localize import contrast_from_map

ROOT = Path(__file__).resolve().parents[2]
FRESH_SEED = 424_242  # not a training ([0, i]) or validation ([900000001, i]) seed


@pytest.mark.parametrize("name", bundled_names("scgn"))
def test_bundled_files_and_card(name):
    pt = bundled_dir("scgn") / f"{name}.pt"
    net, card = load_model(name)

    assert pt.stat().st_size <= 10 * 2**20
    assert card.parameters == count_parameters(net) and card.io.modes == ["hrtem"]
    assert card.training.cumulative.steps >= card.training.run.steps > 0 and card.training.hardware
    assert card.validation.metrics and card.versions


# Cards of the first format were exported before SCGN's channel attention became the authors' σ(MLP(avg)) +
# σ(MLP(max)); such weights were trained with σ(MLP(avg) + MLP(max)) and do not denoise with the corrected network.
PRE_ATTENTION_FIX = "format" not in json.loads((bundled_dir("scgn") / "hrtem.json").read_text())


@pytest.mark.xfail(PRE_ATTENTION_FIX, strict=True, reason="the bundled hrtem weights predate the attention fix "
                   "(trained with the CBAM form); weights retrained with the authors' attention replace them")
def test_hrtem_raises_psnr_by_6_db_on_fresh_frames():
    net, card = load_model("hrtem")
    runner = Runner(net, card)  # as scgn-denoise runs it
    cfg = SynthConfig(mode="hrtem", size=256)
    gains = []
    for i in range(8):
        x, y = make_pair(synthesize(cfg, [FRESH_SEED, i]), "denoise")
        out = runner.run(x, mode="hrtem")["denoised"]  # normalizes x by its own range and maps back
        gains.append(metrics.psnr(out, y, data_range=1.0) - metrics.psnr(x, y, data_range=1.0))
    print("PSNR gains (dB):", np.round(gains, 2))
    assert np.mean(gains) >= 6.0


def _clean_resolvable_frame():
    """A clean crystalline frame whose columns the optics resolve and image dark (em_noise.controls)."""
    return resolvable_lattice([FRESH_SEED, 100])


def _atoms_f1(tmp_path, extra):
    s = _clean_resolvable_frame()
    path = write_image(tmp_path / "clean.tif", s["clean"], pixel_size_A=s["pixel_size_A"])
    assert denoise_main([str(path), "--atoms", *extra]) == 0
    with open(tmp_path / "clean.atoms.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    found = np.array([[float(r["x_px"]), float(r["y_px"])] for r in rows]).reshape(-1, 2)
    m = metrics.match_positions(found, s["positions"], max_dist_px=2.0)
    print(f"{extra}: {len(s['positions'])} columns, found {len(found)}: precision {m['precision']:.3f} "
          f"recall {m['recall']:.3f} F1 {m['f1']:.3f}")
    if rows:
        assert float(rows[0]["x_A"]) == pytest.approx(float(rows[0]["x_px"]) * s["pixel_size_A"], rel=1e-3)
    return m["f1"]


def test_atoms_finds_columns_on_a_clean_frame(tmp_path):
    """The default detector (contrast chosen by the bundled atom map) on a frame of dark columns."""
    assert _atoms_f1(tmp_path, []) >= 0.9


def test_atoms_given_dark_contrast_finds_columns_on_a_clean_frame(tmp_path):
    assert _atoms_f1(tmp_path, ["--atoms-contrast", "dark"]) >= 0.9


def test_atom_map_judges_the_contrast_of_the_clean_frame():
    s = _clean_resolvable_frame()
    runner, amap_runner = prepare("hrtem", atoms=True)
    maps = (amap_runner or runner).run(s["clean"], mode="hrtem")["atom_map"]
    assert contrast_from_map(maps, s["clean"]) == "dark"
    assert contrast_from_map(maps, 255.0 - s["clean"]) == "bright"


def test_atoms_only_where_there_is_a_lattice():
    """End to end (the shipped models, scgn-denoise's defaults): a frame of vacuum, amorphous film or interference
    fringes gives < 1 % of the columns found on a crystal frame of the same size."""
    runner, amap = prepare("hrtem", atoms=True)
    crystal = _clean_resolvable_frame()
    _, table = process(runner, amap, crystal["clean"], atoms=True)
    n_crystal = len(table)
    assert metrics.match_positions(table.xy_px, crystal["positions"], max_dist_px=2.0)["f1"] >= 0.8
    for kind, dose in (("vacuum", 200.0), ("amorphous", 200.0), ("amorphous", 5000.0),
                       ("fringes", 1000.0)):
        _, free = process(runner, amap, lattice_free_frame(kind, dose, FRESH_SEED), atoms=True)
        assert len(free) < 0.01 * n_crystal, f"{kind} at {dose} e/Å²: {len(free)} columns, crystal {n_crystal}"


@pytest.mark.xfail(strict=True, reason="hrtem-atoms at its CPU budget (600 steps, width 32) reaches validation "
                                       "F1 ≈ 0.27; the peaks of its atom map need more training to reach 0.9")
def test_atoms_model_peaks_find_columns_on_a_clean_frame(tmp_path):
    assert _atoms_f1(tmp_path, ["--atoms-contrast", "model"]) >= 0.9


def test_example_frame_denoises(tmp_path):
    example = ROOT / "examples" / "hrtem_frame.tif"

    assert denoise_main([str(example), "-o", str(tmp_path)]) == 0

    src, out = read_image(example), read_image(tmp_path / "hrtem_frame.denoised.tif")
    assert out.data.shape == src.data.shape == (512, 512)
    assert out.pixel_size_A == pytest.approx(src.pixel_size_A, rel=1e-5)
