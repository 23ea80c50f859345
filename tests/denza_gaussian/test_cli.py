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
    code, out, err = _run([path, "--iters", "30", "--holdout", "3", "--no-progress"], capsys)
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
    assert report["heldout"]["indices"] == [2, 5, 8] and np.isfinite(report["heldout"]["psnr_db"])
    assert report["iterations"] == 30 and np.isfinite(report["final_loss"]) and len(report["gamma"]) == 9
    assert "held-out PSNR" in out


@pytest.mark.parametrize("method", ["sirt", "fbp"])
def test_classical_methods(series_file, tmp_path, capsys, method):
    path, _, _ = series_file
    out_file = tmp_path / "sub" / "vol.mrc"
    code, _, err = _run([path, "--method", method, "-o", out_file, "--thickness", "16", "--iters", "10",
                         "--holdout", "4", "--no-preview"], capsys)
    assert code == 0, err
    with mrcfile.open(out_file) as m:
        assert m.data.shape == (16, 24, 24)
    report = json.loads((tmp_path / "sub" / "vol.json").read_text())
    assert report["method"] == method and report["heldout"]["psnr_db"] > 10
    assert not (tmp_path / "sub" / "vol.preview.png").exists()


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
    assert report["volume_shape_zyx"] == [12, 12, 12] and report["voxel_size_A"] == pytest.approx(6.0)
    assert np.array(report["alignment_shifts_px"]).shape == (9, 2)


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
    [("0\n10\n20\n", "3 tilt angles for 9 images"), ("".join(f"{a}\n" for a in [0, 1, 2, 3, 3, 5, 6, 7, 8]), "duplicate"),
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
    code, _, err = _run([path, "--device", "cuda"], capsys) if not __import__("torch").cuda.is_available() else (2, "", "cuda")
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
    assert report["views"] == 45 and report["voxel_size_A"] == pytest.approx(2.5)
    assert report["heldout"]["psnr_db"] > 25
    for name in ("np.mrc", "np.reproj.mrc", "np.preview.png"):
        assert (tmp_path / name).exists()


def test_size_resamples_and_scales_the_voxel(series_file, tmp_path, capsys):
    path, _, _ = series_file
    code, _, err = _run([path, "--method", "sirt", "--size", "16", "--iters", "5", "-o", tmp_path / "s.mrc"], capsys)
    assert code == 0, err
    with mrcfile.open(tmp_path / "s.mrc") as m:
        assert m.data.shape == (16, 16, 16)
        assert float(m.voxel_size.x) == pytest.approx(3.0 * 24 / 16)
