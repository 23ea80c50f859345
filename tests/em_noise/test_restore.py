"""The file-level restoration runner shared by sfin-enhance and scgn-denoise."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from em_noise.cliutil import resolve_device, run
from em_noise.errors import EMInputError
from em_noise.io import read_image, write_image
from em_noise.restore import restore_array, restore_file


def _double(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


def test_scaling_is_mapped_back_to_input_units(tmp_path):
    # Prediction y = 2x in normalized units must come back as 2*(v - lo) + lo in input units.
    rng = np.random.default_rng(0)
    data = rng.uniform(1000, 5000, (40, 50)).astype(np.float32)
    out = restore_array(_double, data, tile_size=32, overlap=8)
    lo, hi = np.percentile(data.astype(np.float64), [0.1, 99.9])
    np.testing.assert_allclose(out, 2 * (data - lo) + lo, rtol=1e-4)


def test_identity_predictor_returns_input_for_each_frame_of_a_stack():
    data = np.random.default_rng(1).normal(0, 1, (3, 33, 47)).astype(np.float32) * np.array([1, 10, 100])[:, None, None]
    out = restore_array(lambda x: x, data.astype(np.float32), tile_size=16, overlap=4)
    np.testing.assert_allclose(out, data, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("ext", [".mrc", ".tif"])
def test_restore_file_keeps_pixel_size_and_writes_next_to_input(tmp_path, ext):
    src = write_image(tmp_path / f"frame{ext}", np.random.default_rng(2).random((2, 20, 20)).astype(np.float32),
                      pixel_size_A=0.85)
    res = restore_file(src, _double, suffix="enhanced", progress=False)
    assert res.output == tmp_path / f"frame.enhanced{ext}"
    out = read_image(res.output)
    assert out.pixel_size_A == pytest.approx(0.85)
    assert out.data.shape == (2, 20, 20)


def test_restore_file_refuses_existing_output_before_computing(tmp_path):
    src = write_image(tmp_path / "f.tif", np.ones((8, 8), np.float32))
    (tmp_path / "f.enhanced.tif").write_bytes(b"keep")
    calls = []

    def predict(x):
        calls.append(1)
        return x

    with pytest.raises(EMInputError, match="--overwrite"):
        restore_file(src, predict, suffix="enhanced", progress=False)
    assert calls == [] and (tmp_path / "f.enhanced.tif").read_bytes() == b"keep"


def test_restore_file_preview_and_output_dir(tmp_path):
    src = write_image(tmp_path / "f.png", np.random.default_rng(3).integers(0, 255, (24, 24)).astype(np.float32))
    res = restore_file(src, lambda x: x, suffix="denoised", out_dir=tmp_path / "out", preview=True, progress=False)
    assert res.output == tmp_path / "out" / "f.denoised.png"
    assert res.preview is not None and res.preview.stat().st_size > 0


def test_run_turns_input_errors_into_exit_2(capsys):
    def body(argv):
        raise EMInputError("x.mrc", "broken\nheader")

    assert run(body, [], prog="tool") == 2
    err = capsys.readouterr().err
    assert err == "tool: error: x.mrc: broken header\n"


def test_cuda_request_without_cuda_is_an_input_error():
    if torch.cuda.is_available():
        pytest.skip("machine has CUDA")
    with pytest.raises(EMInputError, match="cuda"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
