"""denza-recon end to end on tiny series: outputs, report, conventions, error exits."""
from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest
import tifffile
from denza_gaussian.cli import main


def _run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_denza_writes_volume_reprojections_preview_and_report(series_file, tmp_path, capsys):
    path, angles, vol = series_file
    code, out, err = _run([path, "--iters", "30", "--lambda-tv", "1", "--holdout", "3", "--no-progress"], capsys)
    assert code == 0, err
    stem = path.with_suffix("")
    volume, reproj = f"{stem}.denza.mrc", f"{stem}.denza.reproj.mrc"
    with mrcfile.open(volume) as m:
        assert m.data.shape == (24, 24, 24)
        assert float(m.voxel_size.x) == pytest.approx(3.0)
    with mrcfile.open(reproj) as m:
        assert m.data.shape == (9, 24, 24)
    assert (tmp_path / "tilts.denza.preview.png").exists()
    report = json.loads((tmp_path / "tilts.denza.json").read_text())
    assert report["method"] == "denza" and report["views"] == 9 and report["training_views"] == 6
    assert report["heldout"]["file_indices"] == [2, 5, 8] and np.isfinite(report["heldout"]["psnr_db"])
    assert report["iterations"] == 30 and np.isfinite(report["final_loss"]) and len(report["images"]) == 9
    assert [e["heldout"] for e in report["images"]] == [i in (2, 5, 8) for i in range(9)]
    assert "held-out PSNR" in out and "6 of 9 views" in out


@pytest.mark.parametrize("method", ["sirt", "fbp"])
def test_classical_methods(series_file, tmp_path, capsys, method):
    path, _, _ = series_file
    out_file = tmp_path / "sub" / "vol.mrc"
    code, _, err = _run([path, "--method", method, "-o", out_file, "--thickness", "16", "--holdout", "4",
                         "--no-preview"], capsys)
    assert code == 0, err
    with mrcfile.open(out_file) as m:
        assert m.data.shape == (16, 24, 24)
    report = json.loads((tmp_path / "sub" / "vol.json").read_text())
    assert report["method"] == method and report["heldout"]["psnr_db"] > 10
    assert not (tmp_path / "sub" / "vol.preview.png").exists()
    if method == "sirt":  # iterations chosen by cross-validation, recorded
        assert report["tuning"]["chosen"] == report["iterations"]


def test_sirt_volume_resembles_the_phantom(series_file, tmp_path, capsys):
    path, _, vol = series_file
    out_file = tmp_path / "v.mrc"
    assert _run([path, "--method", "sirt", "-o", out_file, "--no-preview"], capsys)[0] == 0
    rec = mrcfile.read(out_file)
    assert np.corrcoef(rec.ravel(), vol.ravel())[0, 1] > 0.8


def test_tilt_axis_x_gives_the_transposed_volume(series_file, tmp_path, capsys):
    path, angles, _ = series_file
    data = mrcfile.read(path)
    tifffile.imwrite(tmp_path / "t.tif", np.ascontiguousarray(data.transpose(0, 2, 1)))
    (tmp_path / "t.tlt").write_text(path.with_suffix(".tlt").read_text())
    assert _run([path, "--method", "sirt", "-o", tmp_path / "a.mrc", "--iters", "10"], capsys)[0] == 0
    assert _run([tmp_path / "t.tif", "--method", "sirt", "-o", tmp_path / "b.mrc", "--tilt-axis", "x",
                 "--iters", "10"], capsys)[0] == 0
    a, b = mrcfile.read(tmp_path / "a.mrc"), mrcfile.read(tmp_path / "b.mrc")
    np.testing.assert_allclose(b, a.transpose(0, 2, 1), atol=1e-3 * np.abs(a).max())


def test_bin_and_align_are_reported(series_file, tmp_path, capsys):
    path, _, _ = series_file
    code, _, err = _run([path, "--method", "fbp", "--bin", "2", "--align", "-o", tmp_path / "b.mrc"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "b.json").read_text())
    cy, cx = report["alignment"]["crop_px_each_side_yx"]  # input pixels, i.e. 2 per binned pixel
    shape = (12 - 2 * cx // 2, 12 - 2 * cy // 2, 12 - 2 * cx // 2)
    assert report["volume_shape_zyx"] == list(shape)
    with mrcfile.open(tmp_path / "b.mrc") as m:
        assert m.data.shape == shape
    assert report["voxel_size_A"] == pytest.approx(6.0)
    assert all(len(e["shift_px_yx"]) == 2 for e in report["images"])
    with mrcfile.open(tmp_path / "b.ali") as m:  # the aligned stack, as the volume was reconstructed from
        assert m.data.shape == (9, shape[1], shape[2])
    xf = np.loadtxt(tmp_path / "b.xf")
    assert xf.shape == (9, 6)
    np.testing.assert_allclose(xf[:, 4:], [e["shift_px_yx"][::-1] for e in report["images"]], atol=1e-3)


def _shifted_series(tmp_path, shifts, ramp=False):
    from denza_gaussian.phantoms import make_phantom, simulate_tilts, tilt_angles
    from em_noise.io import write_image
    from scipy import ndimage

    angles = tilt_angles(9, 60.0)
    clean = simulate_tilts(make_phantom("core_shell", 40, seed=1), angles, peak_counts=None)["clean"]
    if ramp:  # signal up to the frame's edges (an object larger than the field of view)
        yy, xx = np.mgrid[0:40, 0:40]
        clean = clean + 0.05 * (xx + 2 * yy) / 40
    data = np.stack([ndimage.shift(c, s, order=1) for c, s in zip(clean, shifts)]) * 100 + 5
    path = tmp_path / "shifted.mrc"
    write_image(path, data.astype(np.float32), pixel_size_A=2.0, volume=False)
    path.with_suffix(".tlt").write_text("".join(f"{a:.3f}\n" for a in angles))
    return path, angles, data


def test_aligned_views_carry_no_filled_band(tmp_path):
    from denza_gaussian.api import ReconOptions, run_series
    from denza_gaussian.tiltseries import load_tilt_series

    shifts = np.random.default_rng(5).uniform(-3, 3, size=(9, 2))
    path, _, _ = _shifted_series(tmp_path, shifts, ramp=True)
    res = run_series(load_tilt_series(path), ReconOptions(method="fbp", align=True))
    aligned = res.aligned
    cy, cx = res.report["alignment"]["crop_px_each_side_yx"]
    assert cy >= 1 and cx >= 1 and aligned.shape[1:] == (40 - 2 * cy, 40 - 2 * cx)
    # no view has a constant (filled-in) first/last row or column
    for view in aligned:
        for edge in (view[0], view[-1], view[:, 0], view[:, -1]):
            assert np.ptp(edge) > 0


def test_report_entries_follow_the_files_order_and_axes(tmp_path, capsys):
    shifts = np.random.default_rng(7).uniform(-2.5, 2.5, size=(9, 2))
    path, angles, data = _shifted_series(tmp_path, shifts)
    rev = tmp_path / "reversed.tif"
    tifffile.imwrite(rev, np.ascontiguousarray(data[::-1]))
    rev.with_suffix(".tlt").write_text("".join(f"{a:.3f}\n" for a in angles[::-1]))
    tr = tmp_path / "transposed.tif"
    tifffile.imwrite(tr, np.ascontiguousarray(data.transpose(0, 2, 1)))
    tr.with_suffix(".tlt").write_text(path.with_suffix(".tlt").read_text())
    common = ["--iters", "20", "--lambda-tv", "1", "--align", "--holdout", "3", "--no-progress", "--no-preview"]
    reports = {}
    for name, p, extra in (("orig", path, []), ("rev", rev, ["--angles", str(rev.with_suffix(".tlt"))]),
                           ("tr", tr, ["--tilt-axis", "x", "--angles", str(tr.with_suffix(".tlt"))])):
        code, _, err = _run([p, "-o", tmp_path / f"{name}.mrc", *common, *extra], capsys)
        assert code == 0, err
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())["images"]
    orig, rev_e, tr_e = reports["orig"], reports["rev"], reports["tr"]
    assert [e["angle_deg"] for e in orig] == pytest.approx(list(angles), abs=1e-3)
    assert [e["angle_deg"] for e in rev_e] == pytest.approx(list(angles[::-1]), abs=1e-3)
    for i, e in enumerate(orig):
        r = rev_e[len(orig) - 1 - i]
        assert r["angle_deg"] == pytest.approx(e["angle_deg"]) and r["heldout"] == e["heldout"]
        assert r["gamma"] == pytest.approx(e["gamma"], abs=2e-3)
        assert r["shift_px_yx"] == pytest.approx(e["shift_px_yx"], abs=0.05)
        t = tr_e[i]
        assert t["gamma"] == pytest.approx(e["gamma"], abs=2e-3)
        assert t["shift_px_yx"] == pytest.approx(e["shift_px_yx"][::-1], abs=0.05)
    # the shifts undo the applied ones up to one common offset (the axis centring), in the file's axes
    applied = -np.array([e["shift_px_yx"] for e in orig])
    resid = applied - shifts
    assert np.abs(resid - resid.mean(0)).max() < 0.6


def test_classical_methods_do_not_load_the_training_stack(series_file, tmp_path):
    import subprocess
    import sys

    path, _, _ = series_file
    code = ("import sys; from denza_gaussian.cli import main; "
            f"rc = main([{str(path)!r}, '--method', 'fbp', '-o', {str(tmp_path / 'f.mrc')!r}, '--no-preview']); "
            "print(rc, 'lightning' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-3:] == ["0", "False", "False"], out.stderr


def test_help_reads_once(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text and text.count("(default") == len(set(text.split("(default"))) - 1
    assert "default: True" not in text and "cross-validation" in text


def test_existing_output_needs_overwrite_and_input_is_never_replaced(series_file, tmp_path, capsys):
    path, _, _ = series_file
    args = [path, "--method", "fbp", "-o", tmp_path / "o.mrc"]
    assert _run(args, capsys)[0] == 0
    code, _, err = _run(args, capsys)
    assert code == 2 and "exists" in err and "Traceback" not in err
    assert _run(args + ["--overwrite"], capsys)[0] == 0
    code, _, err = _run([path, "--method", "fbp", "-o", path, "--overwrite"], capsys)
    assert code == 2 and "input" in err


@pytest.mark.parametrize(
    "angles_text, message",
    [("0\n10\n20\n", "3 tilt angles for 9 images"),
     ("".join(f"{a}\n" for a in [0, 1, 2, 3, 3, 5, 6, 7, 8]), "duplicate"),
     ("".join(f"{a}\n" for a in [0, 1, 2, 3, 9, 5, 6, 7, 8]), "not sorted"),
     ("".join(f"{a}\n" for a in [-90, 1, 2, 3, 4, 5, 6, 7, 8]), "< 90")],
)
def test_bad_angles_exit_2_with_one_line(series_file, capsys, angles_text, message):
    path, _, _ = series_file
    path.with_suffix(".tlt").write_text(angles_text)
    code, _, err = _run([path, "--method", "fbp"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_bad_data_exit_2(tmp_path, capsys):
    data = np.ones((5, 16, 16), np.float32)
    data[1, 3, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", data)
    code, _, err = _run([tmp_path / "nan.tif", "--angles=-40:40:20"], capsys)
    assert code == 2 and "non-finite" in err
    tifffile.imwrite(tmp_path / "const.tif", np.ones((5, 16, 16), np.float32))
    code, _, err = _run([tmp_path / "const.tif", "--angles=-40:40:20"], capsys)
    assert code == 2 and "constant" in err
    tifffile.imwrite(tmp_path / "two.tif", np.random.default_rng(0).random((2, 16, 16)).astype(np.float32))
    code, _, err = _run([tmp_path / "two.tif", "--angles=-10:10:20"], capsys)
    assert code == 2 and "at least 3" in err
    code, _, err = _run([tmp_path / "missing.mrc"], capsys)
    assert code == 2 and "no such file" in err


def test_usage_errors_exit_2(series_file, capsys):
    path, _, _ = series_file
    with pytest.raises(SystemExit) as e:
        main([str(path), "--method", "nope"])
    assert e.value.code == 2
    code, _, err = _run([path, "--holdout", "1"], capsys)
    assert code == 2 and "holdout" in err
    no_cuda = not __import__("torch").cuda.is_available()
    code, _, err = _run([path, "--device", "cuda"], capsys) if no_cuda else (2, "", "cuda")
    assert code == 2 and "cuda" in err.lower()


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_threads_must_be_positive(series_file, capsys):
    path, _, _ = series_file
    code, _, err = _run([path, "--threads", "0"], capsys)
    assert code == 2 and "--threads" in err


def test_threads_default_to_torchs_own_and_an_explicit_count_is_set(series_file, tmp_path, monkeypatch, capsys):
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    path, _, _ = series_file
    base = [path, "--iters", "5", "--lambda-tv", "1", "--no-progress", "--no-preview", "--overwrite"]
    assert _run(base + ["-o", tmp_path / "a.mrc"], capsys)[0] == 0
    assert calls == []  # every core PyTorch is allowed (OMP_NUM_THREADS, else all)
    assert _run(base + ["-o", tmp_path / "b.mrc", "--threads", "1"], capsys)[0] == 0
    assert calls == [1]


def test_preview_shows_four_panels(series_file, tmp_path, capsys):
    from PIL import Image

    path, _, _ = series_file
    assert _run([path, "--method", "fbp", "-o", tmp_path / "p.mrc"], capsys)[0] == 0
    img = np.asarray(Image.open(tmp_path / "p.preview.png"))
    assert img.ndim == 2 and img.shape[1] > 3.5 * img.shape[0] and img.shape[0] >= 96


@pytest.mark.slow
def test_example_series_end_to_end(tmp_path, capsys):
    """The README's first command on the committed example (about a minute of CPU)."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "nanoparticle_tilts.mrc"
    code, out, err = _run([example, "-o", tmp_path / "np.mrc", "--holdout", "5", "--no-progress"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "np.json").read_text())
    assert report["views"] == 45 and report["voxel_size_A"] == 2.5 and report["tuning"]["chosen"]
    assert report["heldout"]["psnr_db"] > 25
    for name in ("np.mrc", "np.reproj.mrc", "np.preview.png"):
        assert (tmp_path / name).exists()


def test_size_resamples_and_scales_the_voxel(series_file, tmp_path, capsys):
    path, _, _ = series_file
    code, _, err = _run([path, "--method", "sirt", "--size", "16", "--iters", "5", "-o", tmp_path / "s.mrc"],
                        capsys)
    assert code == 0, err
    with mrcfile.open(tmp_path / "s.mrc") as m:
        assert m.data.shape == (16, 16, 16)
        assert float(m.voxel_size.x) == pytest.approx(3.0 * 24 / 16)


# --------------------------------------------------------------------------- conventions, outputs and faults

SET = ("tilts.fbp.mrc", "tilts.fbp.reproj.mrc", "tilts.fbp.preview.png", "tilts.fbp.json")


def test_o_is_a_folder_or_a_volume_file(series_file, tmp_path, capsys):
    path, _, _ = series_file
    assert _run([path, "--method", "fbp", "-o", tmp_path / "out"], capsys)[0] == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(SET)
    assert _run([path, "--method", "fbp", "-o", tmp_path / "vol.rec"], capsys)[0] == 0
    assert (tmp_path / "vol.rec").is_file() and (tmp_path / "vol.json").is_file()
    (tmp_path / "afile").write_text("keep")
    code, _, err = _run([path, "--method", "fbp", "-o", tmp_path / "afile"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "afile" in err
    assert (tmp_path / "afile").read_text() == "keep"


def test_several_series_a_bad_one_reported_and_skipped(series_file, tmp_path, capsys):
    path, _, _ = series_file
    code, out, err = _run([tmp_path / "missing.mrc", path, "--method", "fbp", "-o", tmp_path / "o"], capsys)
    assert code == 2 and err.strip().splitlines() == [f"denza-recon: error: {tmp_path / 'missing.mrc'}: no such file"]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(SET)
    code, _, err = _run([path, path, "--method", "fbp", "-o", tmp_path / "x.mrc"], capsys)
    assert code == 2 and "-o DIR" in err


def test_version(capsys):
    import denza_gaussian

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"denza-recon {denza_gaussian.__version__}"


def test_an_angle_file_is_never_an_output(series_file, tmp_path, capsys):
    from em_noise.testing import snapshot

    path, _, _ = series_file
    angles = tmp_path / "angles.mrc"  # an angle file named like a volume
    angles.write_text(path.with_suffix(".tlt").read_text())
    before = snapshot(tmp_path)
    code, _, err = _run([path, "--method", "fbp", "--angles", angles, "-o", angles, "--overwrite"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "angles.mrc" in err and "input" in err
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(not __import__("em_noise.testing").testing.can_make_read_only(), reason="cannot make read-only")
def test_a_read_only_folder_is_one_line_before_any_work(series_file, tmp_path, capsys):
    from em_noise.testing import read_only, snapshot

    path, _, _ = series_file
    with read_only(tmp_path):  # the series' own folder: the default output folder
        before = snapshot(tmp_path)
        code, _, err = _run([path, "--no-progress"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "read-only" in err and "Traceback" not in err
        assert snapshot(tmp_path) == before


def _recon(*args):
    from em_noise.testing import script

    return [script("denza-recon"), *map(str, args), "--no-progress"]


def test_full_disk_is_one_line_exit_1_nothing_left(series_file, tmp_path):
    from em_noise.testing import run_cli, snapshot

    path, _, _ = series_file
    before = snapshot(tmp_path)
    res = run_cli(_recon(path, "--method", "fbp"), fsize=20_000)
    assert res.code == 1 and res.one_line("tilts.fbp"), res.stderr
    assert snapshot(tmp_path) == before


def test_ctrl_c_during_the_fit_stops_within_2_s_with_no_output(series_file, tmp_path):
    import time

    from em_noise.testing import has_loaded, interrupt, snapshot

    path, _, _ = series_file
    before = snapshot(tmp_path)
    started: list[float] = []

    def fitting(pid: int) -> bool:
        if not started and has_loaded(pid):
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] > 2.0

    res = interrupt(_recon(path, "--iters", "100000", "--no-tune"), when=fitting)
    assert res.code == 130 and res.seconds < 2.0, (res.code, res.seconds, res.stderr)
    assert res.one_line("interrupted"), res.stderr
    assert snapshot(tmp_path) == before


def test_kill_9_at_the_write_leaves_nothing_or_everything_and_a_rerun_completes(series_file, tmp_path):
    import signal

    from em_noise.testing import interrupt, run_cli, temp_files

    path, _, _ = series_file
    res = interrupt(_recon(path, "--method", "fbp"), when=lambda pid: bool(temp_files(tmp_path)),
                    sig=signal.SIGKILL)
    assert res.code in (0, -signal.SIGKILL), res.stderr  # killed at the write, or done just before the kill
    finals = {p.name for p in tmp_path.iterdir() if p.name in SET}
    assert finals in (set(), set(SET))  # never a half set
    rerun = run_cli(_recon(path, "--method", "fbp", *(["--overwrite"] if finals else [])))  # no --overwrite needed
    assert rerun.code == 0, rerun.stderr                                                   # after a killed run
    assert temp_files(tmp_path) == [] and {p.name for p in tmp_path.iterdir() if p.name in SET} == set(SET)


def test_python_defaults_equal_the_cli():
    import inspect

    from denza_gaussian.api import reconstruct
    from denza_gaussian.cli import build_parser

    cli = vars(build_parser().parse_args(["x.mrc"]))
    api = inspect.signature(reconstruct).parameters
    for c, a in {"method": "method", "tilt_axis": "tilt_axis", "thickness": "thickness", "bin": "bin_factor",
                 "size": "size", "lambda_tv": "lambda_tv", "iters": "iterations", "holdout": "holdout",
                 "align": "align", "seed": "seed"}.items():
        assert cli[c] == api[a].default, c


def test_help_states_the_configured_schedule_length():
    from denza_gaussian.cli import build_parser
    from denza_gaussian.config import DenzaConfig

    text = " ".join(build_parser().format_help().split())
    assert f"DenZa {DenzaConfig().iterations} steps" in text


def test_the_summary_line_names_every_choice_of_the_cross_validation():
    from denza_gaussian.cli import _summary

    report = {"method": "denza", "views": 45, "seconds": 3.0, "outputs": {"volume": "v.mrc"},
              "tuning": {"chosen": {"lambda_tv": 2.0, "stop_at": 250, "schedule": 250, "data_term": "l2"}}}
    assert _summary(report).endswith("cross-validation chose lambda_tv 2, stop_at 250, data_term l2")
    assert _summary(report | {"method": "sirt", "tuning": {"chosen": 50}}).endswith("chose 50 iterations")
