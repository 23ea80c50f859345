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
    assert main(["synth", "--mode", "haadf", "--count", "2", "--size", "64", "--seed", "1", "-o",
                 str(tmp_path)]) == 0
    for i in range(2):
        for kind in ("noisy", "clean", "target", "atoms"):
            img = read_image(tmp_path / f"{i:04d}_{kind}.tif")
            assert img.data.shape == (64, 64)
            assert img.pixel_size_A is not None and img.pixel_size_A > 0
        meta = json.loads((tmp_path / f"{i:04d}.json").read_text())
        assert "positions_xy_px" in meta and len(meta["positions_xy_px"]) > 0


def test_synth_is_deterministic(tmp_path):
    for d in ("a", "b"):
        assert main(["synth", "--mode", "bf", "--count", "1", "--size", "64", "--seed", "7", "-o",
                     str(tmp_path / d)]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "a/0000_noisy.tif").data,
                                  read_image(tmp_path / "b/0000_noisy.tif").data)


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
    assert main(["synth", "--mode", mode, "--count", "1", "--size", "128", "--seed", "3", "-o",
                 str(tmp_path / "s")]) == 0
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
    code = main(["synth", "--mode", "haadf", "--count", "1", "--noise", str(tmp_path / "p.json"), "-o",
                 str(tmp_path / "o")])
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


# --------------------------------------------------------------------------- an input is never an output


def _one_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0] and all(n in err[0] for n in needles), err
    return err[0]


@pytest.fixture
def samples(tmp_path, capsys):
    """Two 48 px HAADF samples in ``s/`` and a good 64 px frame; returns (folder, frame, snapshot of tmp_path)."""
    from em_noise.testing import snapshot

    assert main(["synth", "--mode", "haadf", "--count", "2", "--size", "48", "-o", str(tmp_path / "s")]) == 0
    frame = write_image(tmp_path / "good.tif", np.random.default_rng(0).random((64, 64)).astype(np.float32) * 100)
    capsys.readouterr()
    return tmp_path / "s", frame, snapshot(tmp_path)


@pytest.mark.parametrize("case", ["calibrate-onto-input", "calibrate-onto-link", "synth-onto-noise-file",
                                  "preview-onto-sample", "preview-onto-folder-file"])
def test_an_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path, capsys, samples, case):
    from em_noise.testing import snapshot

    s, good, before = samples
    if case == "calibrate-onto-link":
        (tmp_path / "link.tif").symlink_to(good)
        before = snapshot(tmp_path)
    args, name = {
        "calibrate-onto-input": (["calibrate", str(good), "--mode", "haadf", "-o", str(good)], "good.tif"),
        "calibrate-onto-link": (["calibrate", str(good), "--mode", "haadf", "-o", str(tmp_path / "link.tif")],
                                "link.tif"),
        "synth-onto-noise-file": (["synth", "--mode", "haadf", "--count", "2", "--noise", str(s / "0000.json"),
                                   "-o", str(s)], "0000.json"),
        "preview-onto-sample": (["preview", str(s), "-o", str(s / "0000_noisy.tif")], "0000_noisy.tif"),
        "preview-onto-folder-file": (["preview", str(s), "-o", str(s / "0001.json")], "0001.json"),
    }[case]
    assert main([*args, "--overwrite"]) == 2
    assert "input" in _one_line(capsys, name)
    assert snapshot(tmp_path) == before  # every byte of every input unchanged, nothing added


def test_synth_into_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("keep")
    assert main(["synth", "--mode", "haadf", "--count", "1", "--size", "48", "-o", str(tmp_path / "afile")]) == 2
    _one_line(capsys, "afile", "not a directory")
    assert main(["synth", "--mode", "haadf", "--count", "1", "--size", "48", "-o",
                 str(tmp_path / "afile" / "sub")]) == 2
    _one_line(capsys, "afile")
    assert (tmp_path / "afile").read_text() == "keep" and sorted(tmp_path.iterdir()) == [tmp_path / "afile"]


@pytest.mark.skipif(not __import__("em_noise.testing").testing.can_make_read_only(), reason="cannot make read-only")
@pytest.mark.parametrize("cmd", ["synth", "calibrate", "preview"])
def test_a_read_only_output_folder_is_one_line_exit_2(tmp_path, capsys, samples, cmd):
    from em_noise.testing import read_only, snapshot

    s, good, _ = samples
    ro = tmp_path / "ro"
    ro.mkdir()
    args = {"synth": ["synth", "--mode", "haadf", "--count", "1", "--size", "48", "-o", str(ro)],
            "calibrate": ["calibrate", str(good), "--mode", "haadf", "-o", str(ro / "p.json")],
            "preview": ["preview", str(s), "-o", str(ro / "m.png")]}[cmd]
    with read_only(ro):
        before = snapshot(tmp_path)
        assert main(args) == 2
        _one_line(capsys, str(ro))
        assert snapshot(tmp_path) == before


def test_every_cli_has_version(capsys):
    from em_noise import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"em-noise {__version__}"
