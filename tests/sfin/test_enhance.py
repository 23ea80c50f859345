"""sfin.pretrained / sfin.enhance / sfin-enhance: loading, tiled inference, files in and out, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from em_noise.errors import EMInputError
from em_noise.io import read_image, write_image
from em_noise.scaling import normalize, robust_range
from sfin.cli import enhance_main
from sfin.enhance import enhance_array
from sfin.pretrained import config_from_state, load_model


def test_load_model_from_state_dict_recovers_the_config(tiny_weights):
    net = load_model(tiny_weights)
    assert not net.training
    assert config_from_state(net.state_dict()) == {"width": 8, "blocks": 1, "layers_per_block": 2, "pos_encoding": True}


def test_load_model_from_lightning_checkpoint(tmp_path):
    import lightning as L
    from sfin.module import SFINModule

    module = SFINModule(width=8, blocks=2, layers_per_block=1)
    trainer = L.Trainer(max_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    net = load_model(tmp_path / "m.ckpt")
    x = torch.rand(1, 1, 19, 21)
    with torch.no_grad():
        torch.testing.assert_close(net(x), module.net.eval()(x))


def test_load_model_rejects_bad_references(tmp_path):
    with pytest.raises(EMInputError, match="no such weights"):
        load_model(tmp_path / "nope.pt")
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Conv2d(1, 1, 3).state_dict(), other)
    with pytest.raises(EMInputError, match="not SFIN weights"):
        load_model(other)


def test_single_tile_equals_whole_image_inference(tiny_weights, haadf_frame):
    """The FFT branch makes SFIN's receptive field global, so tiled inference equals whole-image inference only
    when the frame is one tile (here: a 96² frame, tile 96); larger frames are blended from overlapping tiles
    (the general overlap equality is tested with a local operator in tests/em_noise/test_tiling.py)."""
    noisy, _ = haadf_frame
    net = load_model(tiny_weights)
    lo, hi = robust_range(noisy)
    with torch.no_grad():
        whole = net(torch.from_numpy(normalize(noisy, lo, hi))[None, None])[0, 0].numpy()
    got = enhance_array(net, noisy, tile_size=96, overlap=16)
    np.testing.assert_allclose(normalize(got, lo, hi), whole, atol=1e-4)


def test_stack_is_enhanced_frame_by_frame(tiny_weights, haadf_frame):
    noisy, _ = haadf_frame
    net = load_model(tiny_weights)
    stack = np.stack([noisy, 3.0 * noisy + 100.0])
    out = enhance_array(net, stack, tile_size=96, overlap=16)
    assert out.shape == stack.shape
    np.testing.assert_allclose(out[0], enhance_array(net, noisy, tile_size=96, overlap=16), atol=1e-4)
    # robust per-frame scaling: an affine change of the input units maps the output the same way
    np.testing.assert_allclose(out[1], 3.0 * out[0] + 100.0, rtol=1e-4, atol=1e-2)


def test_large_frame_is_tiled_without_seams(tiny_weights):
    rng = np.random.default_rng(0)
    img = rng.normal(100, 10, (150, 170)).astype(np.float32)
    out = enhance_array(load_model(tiny_weights), img, tile_size=64, overlap=16)
    assert out.shape == img.shape and np.isfinite(out).all()


# ------------------------------------------------------------------------------------------------ CLI


def _write(path: Path, data: np.ndarray, pixel_size_A: float | None = 0.2) -> Path:
    write_image(path, data, pixel_size_A=pixel_size_A)
    return path


def test_cli_writes_enhanced_tif_with_pixel_size(tmp_path, tiny_weights, haadf_frame):
    noisy, pix = haadf_frame
    src = _write(tmp_path / "frame.tif", noisy, pix)
    assert enhance_main([str(src), "--model", str(tiny_weights), "--device", "cpu", "-q"]) == 0
    out = read_image(tmp_path / "frame.enhanced.tif")
    assert out.data.shape == noisy.shape
    assert out.pixel_size_A == pytest.approx(pix, rel=1e-4)


def test_cli_uses_the_cards_tiling_by_default(tmp_path, tiny_weights, haadf_frame):
    noisy, pix = haadf_frame
    weights = tmp_path / "carded.pt"
    weights.write_bytes(tiny_weights.read_bytes())
    weights.with_suffix(".json").write_text(json.dumps({"inference": {"tile_size": 32, "overlap": 8}}))
    src = _write(tmp_path / "frame.tif", noisy, pix)
    assert enhance_main([str(src), "--model", str(weights), "-q"]) == 0
    got = read_image(tmp_path / "frame.enhanced.tif").data
    net = load_model(weights)
    np.testing.assert_allclose(got, enhance_array(net, noisy, tile_size=32, overlap=8), rtol=1e-5, atol=1e-3)
    assert np.abs(got - enhance_array(net, noisy, tile_size=96, overlap=16)).max() > 1e-3


def test_cli_mrc_stack_to_output_dir_with_preview(tmp_path, tiny_weights, haadf_frame):
    noisy, _ = haadf_frame
    src = _write(tmp_path / "stack.mrc", np.stack([noisy, noisy[::-1]]).astype(np.float32), 0.35)
    rc = enhance_main([str(src), "--model", str(tiny_weights), "-o", str(tmp_path / "out"), "--preview", "-q"])
    assert rc == 0
    out = read_image(tmp_path / "out" / "stack.enhanced.mrc")
    assert out.data.shape == (2, 96, 96) and out.pixel_size_A == pytest.approx(0.35, rel=1e-4)
    assert (tmp_path / "out" / "stack.enhanced.preview.png").stat().st_size > 0


def test_cli_uint16_input_stays_in_its_units(tmp_path, tiny_weights, haadf_frame):
    noisy, _ = haadf_frame
    counts = (noisy * 200).clip(0, 65535).astype(np.uint16)
    src = _write(tmp_path / "counts.tif", counts)
    assert enhance_main([str(src), "--model", str(tiny_weights), "-q"]) == 0
    out = read_image(tmp_path / "counts.enhanced.tif").data
    lo, hi = robust_range(counts.astype(np.float32))
    assert np.median(out) > lo - (hi - lo) and np.median(out) < hi + (hi - lo)


def test_cli_refuses_existing_output_without_overwrite(tmp_path, tiny_weights, haadf_frame, capsys):
    noisy, _ = haadf_frame
    src = _write(tmp_path / "f.tif", noisy)
    assert enhance_main([str(src), "--model", str(tiny_weights), "-q"]) == 0
    capsys.readouterr()
    assert enhance_main([str(src), "--model", str(tiny_weights), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "f.enhanced.tif" in err[0]
    assert enhance_main([str(src), "--model", str(tiny_weights), "-q", "--overwrite"]) == 0


def _file(d: Path, name: str, content: bytes | None) -> Path:
    if content is not None:
        (d / name).write_bytes(content)
    return d / name


@pytest.mark.parametrize("name, content", [
    ("missing.tif", None),
    ("empty.mrc", b""),
    ("junk.tif", b"this is not a tiff"),
    ("truncated.mrc", b"\x00" * 1100),
    ("notes.txt", b"x"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, tiny_weights, capsys, name, content):
    path, word = _file(tmp_path, name, content), name
    assert enhance_main([str(path), "--model", str(tiny_weights), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0] and "Traceback" not in err[0]


def test_cli_bad_input_does_not_stop_the_good_ones(tmp_path, tiny_weights, haadf_frame, capsys):
    noisy, _ = haadf_frame
    good = _write(tmp_path / "good.tif", noisy)
    assert enhance_main([str(tmp_path / "bad.tif"), str(good), "--model", str(tiny_weights), "-q"]) == 2
    assert (tmp_path / "good.enhanced.tif").exists()


@pytest.mark.parametrize("args, word", [
    (["--model", "no_such_model.pt"], "no_such_model.pt"),
    (["--tile-size", "8"], "tile-size"),
    (["--tile-size", "64", "--tile-overlap", "40"], "tile-overlap"),
])
def test_cli_bad_options_exit_2(tmp_path, haadf_frame, capsys, args, word):
    noisy, _ = haadf_frame
    src = _write(tmp_path / "f.tif", noisy)
    assert enhance_main([str(src), "-q", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cli_cuda_without_gpu_exits_2(tmp_path, tiny_weights, haadf_frame, capsys):
    noisy, _ = haadf_frame
    src = _write(tmp_path / "f.tif", noisy)
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
