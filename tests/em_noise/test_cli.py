"""The `em-noise` command: synth, calibrate, preview; help and bad input."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from em_noise.cli import main
from em_noise.io import read_image, write_image


def test_console_script_help_shows_an_example():
    exe = shutil.which("em-noise")
    assert exe is not None, "console script not installed"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "em-noise synth --mode haadf" in out and "calibrate" in out


@pytest.mark.parametrize("cmd", ["synth", "calibrate", "preview"])
def test_subcommand_help_has_example(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert f"em-noise {cmd}" in capsys.readouterr().out


def test_synth_writes_the_sample_files(tmp_path):
    assert main(["synth", "--mode", "haadf", "--count", "2", "--size", "64", "--seed", "1", "-o", str(tmp_path)]) == 0
    for i in range(2):
        for kind in ("noisy", "clean", "target", "atoms"):
            img = read_image(tmp_path / f"{i:04d}_{kind}.tif")
            assert img.data.shape == (64, 64)
            assert img.pixel_size_A is not None and img.pixel_size_A > 0
        meta = json.loads((tmp_path / f"{i:04d}.json").read_text())
        assert "positions_xy_px" in meta and len(meta["positions_xy_px"]) > 0


def test_synth_is_deterministic(tmp_path):
    for d in ("a", "b"):
        args = ["synth", "--mode", "bf", "--count", "1", "--size", "64", "--seed", "7", "-o", str(tmp_path / d)]
        assert main(args) == 0
    a, b = (read_image(tmp_path / f"{d}/0000_noisy.tif").data for d in "ab")
    np.testing.assert_array_equal(a, b)


def test_synth_refuses_to_overwrite(tmp_path, capsys):
    args = ["synth", "--mode", "haadf", "--count", "1", "--size", "64", "-o", str(tmp_path)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    assert main(args + ["--overwrite"]) == 0


@pytest.mark.parametrize("mode", ["haadf", "hrtem"])
def test_calibrate_prints_json_and_synth_takes_it(tmp_path, capsys, mode):
    assert main(["synth", "--mode", mode, "--count", "1", "--size", "128", "--seed", "3",
                 "-o", str(tmp_path / "s")]) == 0
    capsys.readouterr()
    assert main(["calibrate", str(tmp_path / "s/0000_noisy.tif"), "--mode", mode]) == 0
    params = json.loads(capsys.readouterr().out)
    assert params["mode"] == mode and params["schema"] == "em-noise/noise-params"
    assert main(["calibrate", str(tmp_path / "s/0000_noisy.tif"), "--mode", mode, "-o", str(tmp_path / "p.json")]) == 0
    assert main(["synth", "--mode", mode, "--count", "1", "--size", "64", "--noise", str(tmp_path / "p.json"),
                 "-o", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t/0000_noisy.tif").exists()


def test_calibrate_mode_mismatch_is_an_input_error(tmp_path, capsys):
    (tmp_path / "p.json").write_text(json.dumps({"schema": "em-noise/noise-params", "version": 1, "mode": "hrtem"}))
    code = main(["synth", "--mode", "haadf", "--count", "1", "--noise", str(tmp_path / "p.json"),
                 "-o", str(tmp_path / "o")])
    assert code == 2
    assert "p.json" in capsys.readouterr().err


def test_preview_from_folder_and_synthesized(tmp_path):
    assert main(["synth", "--mode", "haadf", "--count", "2", "--size", "64", "-o", str(tmp_path / "s")]) == 0
    assert main(["preview", str(tmp_path / "s"), "-o", str(tmp_path / "m.png")]) == 0
    assert main(["preview", "--mode", "hrtem", "--count", "2", "--size", "64", "-o", str(tmp_path / "h.png")]) == 0
    assert read_image(tmp_path / "m.png").data.shape[0] > 100


@pytest.mark.parametrize("setup, args, needle", [
    (None, ["calibrate", "{d}/missing.tif", "--mode", "haadf"], "no such file"),
    ("junk", ["calibrate", "{d}/junk.mrc", "--mode", "bf"], "junk.mrc"),
    ("nan", ["calibrate", "{d}/nan.npy", "--mode", "haadf"], "non-finite"),
    (None, ["synth", "--mode", "haadf", "--count", "0", "-o", "{d}/o"], "--count"),
    (None, ["preview", "{d}/nowhere", "-o", "{d}/p.png"], "nowhere"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, setup, args, needle):
    if setup == "junk":
        (tmp_path / "junk.mrc").write_bytes(b"\x00\x01" * 300)
    if setup == "nan":
        a = np.ones((16, 16), np.float32)
        a[0, 0] = np.nan
        np.save(tmp_path / "nan.npy", a)
    code = main([a.format(d=tmp_path) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0]


def test_usage_error_exits_2():
    with pytest.raises(SystemExit) as e:
        main(["synth", "--mode", "xray", "-o", "x"])
    assert e.value.code == 2


def test_calibrate_uses_every_frame_of_a_stack_or_the_chosen_ones(tmp_path, capsys):
    from em_noise.synth import SynthConfig, synthesize

    frames = np.stack([synthesize(SynthConfig(mode="haadf", size=128), s)["noisy"] for s in (1, 2, 3)])
    write_image(tmp_path / "stack.mrc", frames, pixel_size_A=0.3)
    assert main(["calibrate", str(tmp_path / "stack.mrc"), "--mode", "haadf"]) == 0
    out = capsys.readouterr()
    params = json.loads(out.out)
    assert params["pixel_size_A"] == pytest.approx(0.3)
    assert params["calibration"]["frames"] == 3
    assert "calibrated 3 of 3 frames" in out.err
    assert main(["calibrate", str(tmp_path / "stack.mrc"), "--mode", "haadf", "--frames", "1:2"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert "frames" not in one["calibration"]  # a single frame: that frame's own calibration
    from em_noise.calibrate import calibrate

    assert one["pointwise"] == calibrate(frames[1], "haadf", pixel_size_A=0.3).to_dict()["pointwise"]


@pytest.mark.parametrize("frames, needle", [("x", "START:STOP"), ("5:9", "selects none"), ("::0", "STEP")])
def test_calibrate_bad_frame_selection_is_one_line_and_exit_2(tmp_path, capsys, frames, needle):
    write_image(tmp_path / "stack.tif", np.random.default_rng(0).random((2, 64, 64)).astype(np.float32) * 100)
    code = main(["calibrate", str(tmp_path / "stack.tif"), "--mode", "haadf", "--frames", frames])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0] and "stack.tif" in err[0]
    bad = np.random.default_rng(1).random((3, 64, 64)).astype(np.float32) * 100
    bad[2] = 7.0  # a constant frame
    write_image(tmp_path / "bad.tif", bad)
    assert main(["calibrate", str(tmp_path / "bad.tif"), "--mode", "haadf"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "bad.tif" in err[-1] and "frame 2" in err[-1] and "constant" in err[-1]
    assert all("Traceback" not in line for line in err)
    write_image(tmp_path / "one.tif", np.ones((64, 64), np.float32))
    assert main(["calibrate", str(tmp_path / "one.tif"), "--mode", "haadf", "--frames", "0:1"]) == 2
    assert "single 2-D image" in capsys.readouterr().err
