"""sfin.api / sfin-enhance: loading, the paper scale, BF polarity, whole-frame and tiled inference, files, bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from em_noise.errors import EMInputError
from em_noise.io import read_image, write_image
from em_noise.scaling import denormalize, normalize, robust_range
from em_noise.weights import IOSpec, Output, read_card, save
from sfin.api import enhance, load_model
from sfin.cli import enhance_main


def _net_out(net, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)[None, None])[0, 0].numpy()


def test_load_model_from_state_dict_recovers_the_config(tiny_weights):
    net, card = load_model(tiny_weights)
    assert not net.training
    assert card.architecture.config == {"width": 8, "blocks": 1, "layers_per_block": 2, "pos_encoding": True}
    assert card.io.outputs[0].scale == "target"


def test_load_model_from_lightning_checkpoint(tmp_path):
    import lightning as L
    from sfin.module import SFINModule

    module = SFINModule(width=8, blocks=2, layers_per_block=1)
    trainer = L.Trainer(max_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    net, card = load_model(tmp_path / "m.ckpt")
    x = torch.rand(1, 1, 19, 21)
    with torch.no_grad():
        torch.testing.assert_close(net(x), module.net.eval()(x))
    assert card.architecture.config["layers_per_block"] == 1


def test_load_model_rejects_bad_references(tmp_path):
    with pytest.raises(EMInputError, match="no such weights"):
        load_model(tmp_path / "nope.pt")
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Conv2d(1, 1, 3).state_dict(), other)
    with pytest.raises(EMInputError, match="not SFIN weights"):
        load_model(other)


def test_whole_frame_on_the_paper_scale_by_default(tiny_weights, haadf_frame):
    """A 96² frame runs in one pass; the output is the network's [0, 1] target × 255 (HAADF background 0)."""
    noisy, _ = haadf_frame
    net, _ = load_model(tiny_weights)
    lo, hi = robust_range(noisy)
    y = _net_out(net, normalize(noisy, lo, hi))
    np.testing.assert_allclose(enhance(noisy, model=str(tiny_weights)), 255.0 * y, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(enhance(noisy, model=str(tiny_weights), units="input"), denormalize(y, lo, hi),
                               rtol=1e-4, atol=1e-3)


def test_bf_with_a_net_for_both_detectors_inverts_before_and_after(tmp_path, tiny_weights, haadf_frame):
    net, card = load_model(tiny_weights)
    stem = card.model_copy(update={"io": IOSpec(modes=["haadf", "bf"], invert=["bf"],
                                                outputs=[Output(name="enhanced", scale="target")])})
    pt, _ = save(net, tmp_path / "stem.pt", stem)
    bf = 255.0 - haadf_frame[0]
    lo, hi = robust_range(bf)
    expected = 255.0 * (1.0 - _net_out(net, 1.0 - normalize(bf, lo, hi)))
    np.testing.assert_allclose(enhance(bf, "bf", model=str(pt)), expected, rtol=1e-4, atol=1e-3)
    assert read_card(pt).io.invert == ["bf"]
    hrtem_only = stem.model_copy(update={"io": IOSpec(modes=["haadf"], outputs=stem.io.outputs)})
    pt2, _ = save(net, tmp_path / "haadf_only.pt", hrtem_only)
    with pytest.raises(EMInputError, match="not bf"):
        enhance(bf, "bf", model=str(pt2))


def test_stack_frame_by_frame_and_independent_of_the_input_units(tiny_weights, haadf_frame):
    noisy, _ = haadf_frame
    stack = np.stack([noisy, 3.0 * noisy + 100.0])
    out = enhance(stack, model=str(tiny_weights))
    assert out.shape == stack.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[0], enhance(noisy, model=str(tiny_weights)), atol=1e-3)
    np.testing.assert_allclose(out[1], out[0], rtol=1e-4, atol=1e-2)  # the paper scale does not see the units


def test_large_frame_is_tiled_without_seams(tiny_weights):
    """A 600 × 700 frame in tiles of 256 px: the difference to one whole-frame pass changes smoothly across the tile
    boundaries (the cross-fade) instead of stepping there."""
    from em_noise.synth import SynthConfig, synthesize

    img = synthesize(SynthConfig(mode="haadf", size=700), [3, 0])["noisy"][:600]
    tiled = enhance(img, model=str(tiny_weights), tile_size=256, overlap=64)
    whole = enhance(img, model=str(tiny_weights), tile_size=1024)
    # mean |Δ| between neighbouring columns, away from the frame's own edges (where the FFT's wrap-around differs)
    step = np.abs(np.diff(tiled - whole, axis=1)).mean(axis=0)[32:-32]
    assert np.abs(tiled - whole).max() > 1e-3  # the tiles do differ from the whole frame (global receptive field)
    assert step.max() < 4 * np.median(step) + 1e-3


def test_a_signal2d_comes_back_as_a_signal2d(tiny_weights, haadf_frame):
    """hyperspy is not needed: anything with ``data``, ``axes_manager.signal_axes`` and ``deepcopy`` is a signal."""
    class Axis:
        scale, units = 0.02, "nm"

    class Signal:
        def __init__(self, data):
            self.data, self.axes_manager = data, type("AM", (), {"signal_axes": (Axis(), Axis())})()

        def deepcopy(self):
            return Signal(self.data.copy())

    noisy, _ = haadf_frame
    out = enhance(Signal(noisy), model=str(tiny_weights))
    assert isinstance(out, Signal)
    np.testing.assert_allclose(out.data, enhance(noisy, model=str(tiny_weights)), atol=1e-4)


def test_python_defaults_equal_the_cli(tmp_path, tiny_weights, haadf_frame):
    noisy, pix = haadf_frame
    src = write_image(tmp_path / "frame.tif", noisy, pixel_size_A=pix)
    assert enhance_main([str(src), "--model", str(tiny_weights), "-q"]) == 0
    got = read_image(tmp_path / "frame.enhanced.tif")
    np.testing.assert_allclose(got.data, enhance(noisy, model=str(tiny_weights)), rtol=1e-5, atol=1e-3)
    assert got.pixel_size_A == pytest.approx(pix, rel=1e-4) and got.metadata["dtype"] == "float32"
    prov = got.provenance
    assert prov["program"] == "sfin-enhance" and prov["model"] == "tiny" and prov["units"] == "paper"
    assert prov["tile_size"] == 512 and prov["architecture"] == "sfin.model.SFIN"


def test_png_in_float_tiff_out_and_uint8_on_request(tmp_path, tiny_weights, haadf_frame):
    noisy, _ = haadf_frame
    src = write_image(tmp_path / "f.png", np.clip(noisy, 0, 255))
    assert enhance_main([str(src), "--model", str(tiny_weights), "-q"]) == 0
    out = read_image(tmp_path / "f.enhanced.tif")
    assert out.metadata["dtype"] == "float32" and not (tmp_path / "f.enhanced.png").exists()
    assert enhance_main([str(src), "--model", str(tiny_weights), "-q", "--uint8"]) == 0
    assert read_image(tmp_path / "f.enhanced.png").metadata["dtype"] == "uint8"


def test_cli_mrc_stack_to_output_dir_with_preview(tmp_path, tiny_weights, haadf_frame):
    noisy, _ = haadf_frame
    src = write_image(tmp_path / "stack.mrc", np.stack([noisy, noisy[::-1]]).astype(np.float32), pixel_size_A=0.35)
    rc = enhance_main([str(src), "--model", str(tiny_weights), "-o", str(tmp_path / "out"), "--preview", "-q"])
    assert rc == 0
    out = read_image(tmp_path / "out" / "stack.enhanced.mrc")
    assert out.data.shape == (2, 96, 96) and out.pixel_size_A == pytest.approx(0.35, rel=1e-4)
    assert (tmp_path / "out" / "stack.enhanced.preview.png").stat().st_size > 0


def test_existing_output_is_refused_before_any_model_is_loaded(tmp_path, haadf_frame, capsys):
    src = write_image(tmp_path / "f.tif", haadf_frame[0])
    (tmp_path / "f.enhanced.tif").write_bytes(b"keep")
    assert enhance_main([str(src), "--model", str(tmp_path / "absent.pt"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "f.enhanced.tif" in err[0] and "--overwrite" in err[0]  # no word about absent.pt
    assert (tmp_path / "f.enhanced.tif").read_bytes() == b"keep"


def test_overwrite_replaces(tmp_path, tiny_weights, haadf_frame):
    src = write_image(tmp_path / "f.tif", haadf_frame[0])
    (tmp_path / "f.enhanced.tif").write_bytes(b"old")
    assert enhance_main([str(src), "--model", str(tiny_weights), "-q", "--overwrite"]) == 0
    assert read_image(tmp_path / "f.enhanced.tif").data.shape == (96, 96)


@pytest.mark.parametrize("name, content", [
    ("missing.tif", None),
    ("empty.mrc", b""),
    ("junk.tif", b"this is not a tiff"),
    ("truncated.mrc", b"\x00" * 1100),
    ("notes.txt", b"x"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, tiny_weights, capsys, name, content):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    assert enhance_main([str(tmp_path / name), "--model", str(tiny_weights), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0] and "Traceback" not in err[0]


def test_cli_bad_input_does_not_stop_the_good_ones(tmp_path, tiny_weights, haadf_frame, capsys):
    good = write_image(tmp_path / "good.tif", haadf_frame[0])
    assert enhance_main([str(tmp_path / "bad.tif"), str(good), "--model", str(tiny_weights), "-q"]) == 2
    assert (tmp_path / "good.enhanced.tif").exists()


@pytest.mark.parametrize("args, word", [
    (["--model", "no_such_model.pt"], "no_such_model.pt"),
    (["--tile-size", "8"], "tile-size"),
    (["--tile-size", "64", "--tile-overlap", "40"], "tile-overlap"),
])
def test_cli_bad_options_exit_2(tmp_path, haadf_frame, capsys, args, word):
    src = write_image(tmp_path / "f.tif", haadf_frame[0])
    assert enhance_main([str(src), "-q", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cli_cuda_without_gpu_exits_2(tmp_path, tiny_weights, haadf_frame, capsys):
    src = write_image(tmp_path / "f.tif", haadf_frame[0])
    assert enhance_main([str(src), "--model", str(tiny_weights), "--device", "cuda", "-q"]) == 2
    assert "cuda" in capsys.readouterr().err.lower()


def test_console_scripts_help_and_usage_errors():
    bindir = Path(sys.executable).parent
    res = subprocess.run([str(bindir / "sfin-enhance"), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "examples:" in res.stdout and "--tile-overlap" in res.stdout
    res = subprocess.run([str(bindir / "sfin-enhance")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "usage" in res.stderr
    res = subprocess.run([str(bindir / "sfin-enhance"), "x.tif", "--mode", "sem"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2


# --------------------------------------------------------------------------- outputs, faults and signals


def _one_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0] and all(n in err[0] for n in needles), err
    return err[0]


def test_an_output_that_is_another_input_is_refused_even_with_overwrite(tmp_path, tiny_weights, haadf_frame, capsys):
    from em_noise.testing import snapshot

    good = write_image(tmp_path / "good.tif", haadf_frame[0])
    second = write_image(tmp_path / "good.enhanced.tif", haadf_frame[0][::-1].copy())
    before = snapshot(tmp_path)
    rc = enhance_main([str(good), str(second), "--model", str(tiny_weights), "-q", "--overwrite"])
    assert rc == 2 and "input" in _one_line(capsys, "good.enhanced.tif")
    after = snapshot(tmp_path)
    assert {k: after[k] for k in before} == before  # every input's bytes unchanged
    assert set(after) - set(before) == {"good.enhanced.enhanced.tif"}  # the other input was processed
    (tmp_path / "b").mkdir()
    a = write_image(tmp_path / "b" / "a.tif", haadf_frame[0])
    (tmp_path / "b" / "a.enhanced.tif").symlink_to(a)  # the output path resolves to the input
    before = snapshot(tmp_path / "b")
    rc = enhance_main([str(a), "--model", str(tiny_weights), "-q", "--overwrite"])
    assert rc == 2 and "input" in _one_line(capsys, "a.enhanced.tif")
    assert snapshot(tmp_path / "b") == before and (tmp_path / "b" / "a.enhanced.tif").is_symlink()
    assert enhance_main([str(good), "--model", str(good), "-q", "--overwrite", "-o", str(tmp_path)]) == 2
    capsys.readouterr()


@pytest.mark.skipif(not __import__("em_noise.testing").testing.can_make_read_only(), reason="cannot make read-only")
def test_a_read_only_output_folder_is_one_line_before_any_work(tmp_path, haadf_frame, capsys):
    from em_noise.testing import read_only, snapshot

    good = write_image(tmp_path / "good.tif", haadf_frame[0])
    (tmp_path / "ro").mkdir()
    with read_only(tmp_path / "ro"):
        before = snapshot(tmp_path)
        rc = enhance_main([str(good), "-o", str(tmp_path / "ro"), "--model", str(tmp_path / "absent.pt"), "-q"])
        assert rc == 2 and "absent" not in _one_line(capsys, "ro")  # refused before the model is looked at
        assert snapshot(tmp_path) == before


def test_16_bit_png_gives_a_float_tiff_not_a_clipped_png(tmp_path, tiny_weights, haadf_frame):
    from PIL import Image

    counts = (haadf_frame[0] * 200 + 1000).astype(np.uint16)  # 1000..~52000 counts
    Image.fromarray(counts).save(tmp_path / "f16.png")
    assert read_image(tmp_path / "f16.png").metadata["dtype"] == "uint16"
    assert enhance_main([str(tmp_path / "f16.png"), "--model", str(tiny_weights), "-q", "--units", "input"]) == 0
    out = read_image(tmp_path / "f16.enhanced.tif")
    assert out.metadata["dtype"] == "float32" and not (tmp_path / "f16.enhanced.png").exists()
    expected = enhance(counts.astype(np.float32), model=str(tiny_weights), units="input")
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-2)  # the 16 bits kept, nothing clipped
    assert np.mean((out.data < 0) | (out.data > 255)) > 0.5


def test_version(capsys):
    import sfin

    with pytest.raises(SystemExit) as e:
        enhance_main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"sfin-enhance {sfin.__version__}"


def _enhance_cmd(*args) -> list[str]:
    from em_noise.testing import script

    return [script("sfin-enhance"), *map(str, args), "-q", "--device", "cpu"]


def test_full_disk_is_one_line_exit_1_nothing_left(tmp_path, tiny_weights, haadf_frame):
    from em_noise.testing import run_cli, snapshot

    good = write_image(tmp_path / "good.tif", haadf_frame[0])
    before = snapshot(tmp_path)
    res = run_cli(_enhance_cmd(good, "--model", tiny_weights), fsize=4_000)
    assert res.code == 1 and res.one_line("good.enhanced.tif"), res.stderr
    assert snapshot(tmp_path) == before


@pytest.fixture
def long_stack(tmp_path):
    """80 frames of 256² (uint16 TIFF): a few seconds of the tiny network, to be interrupted."""
    frames = np.random.default_rng(0).integers(0, 4000, (80, 256, 256)).astype(np.uint16)
    return write_image(tmp_path / "long.tif", frames)


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGKILL", -9)])
def test_signal_mid_run_leaves_nothing_and_a_rerun_completes(tmp_path, tiny_weights, long_stack, sig, code):
    import signal
    import time

    from em_noise.testing import has_loaded, interrupt, run_cli, temp_files

    out = tmp_path / "out"
    started: list[float] = []

    def busy(pid: int) -> bool:  # 1.5 s after torch was mapped: loading the model or running it
        if not started and has_loaded(pid):
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] > 1.5

    res = interrupt(_enhance_cmd(long_stack, "--model", tiny_weights, "-o", out), when=busy,
                    sig=getattr(signal, sig))
    assert res.code == code, res.stderr
    if sig == "SIGINT":
        assert res.seconds < 2.0 and res.one_line("interrupted"), (res.seconds, res.stderr)
        assert temp_files(tmp_path) == []
    assert not (out / "long.enhanced.tif").exists()
    rerun = run_cli(_enhance_cmd(long_stack, "--model", tiny_weights, "-o", out))
    assert rerun.code == 0, rerun.stderr
    assert temp_files(tmp_path) == [] and sorted(p.name for p in out.iterdir()) == ["long.enhanced.tif"]
