"""Tests of em_noise.tiling.predict_tiled: equality with whole-image application, blending without seams, stacks,
several output channels, validation."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from em_noise.errors import EMInputError
from em_noise.tiling import balanced_tile, blend_weights, predict_tiled, tile_starts


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions: thread start-up would dominate on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def conv_stack(seed: int = 0, width: int = 8) -> torch.nn.Module:
    """Random 3-layer 3x3 conv net: receptive-field radius 3 px."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, width, 3, padding=1), torch.nn.Tanh(),
                               torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.Tanh(),
                               torch.nn.Conv2d(width, 1, 3, padding=1)).eval()


def whole(net: torch.nn.Module, img: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        x = torch.from_numpy(img.reshape((-1, 1) + img.shape[-2:]))
        return net(x).numpy().reshape(img.shape)


@pytest.mark.parametrize("shape", [(75, 101), (64, 64), (33, 130), (20, 45)])
def test_tiled_equals_whole_image(shape):
    net = conv_stack()
    img = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    got = predict_tiled(net, img, tile_size=32, overlap=12)  # exact for receptive radius <= overlap // 4 = 3
    ref = whole(net, img)
    r = 3
    assert got.shape == img.shape and got.dtype == np.float32
    np.testing.assert_allclose(got[r:-r, r:-r], ref[r:-r, r:-r], atol=1e-4)


def test_tiled_stack_with_batches_equals_whole():
    net = conv_stack(1)
    img = np.random.default_rng(1).normal(size=(3, 70, 90)).astype(np.float32)
    got = predict_tiled(net, img, tile_size=24, overlap=12, batch_size=5)
    ref = whole(net, img)
    assert got.shape == img.shape
    np.testing.assert_allclose(got[:, 3:-3, 3:-3], ref[:, 3:-3, 3:-3], atol=1e-4)


def test_too_small_overlap_breaks_equality():
    """Sanity check that the equality test can fail: receptive radius 3 > overlap // 4 = 1."""
    net = conv_stack()
    img = np.random.default_rng(2).normal(size=(75, 101)).astype(np.float32)
    got = predict_tiled(net, img, tile_size=32, overlap=4)
    assert np.abs(got[3:-3, 3:-3] - whole(net, img)[3:-3, 3:-3]).max() > 1e-3


def test_small_image_is_one_unpadded_tile():
    calls = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return x * 2.0

    img = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    out = predict_tiled(fn, img, tile_size=64, overlap=16)
    assert calls == [(1, 1, 20, 30)]
    np.testing.assert_array_equal(out, 2 * img)


def test_global_operator_on_a_fitting_image_equals_whole_image():
    """An FFT-based (global) operator gives exactly the whole-image result when the image fits one tile."""
    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(x) * 0.5, s=x.shape[-2:])

    img = np.random.default_rng(3).normal(size=(37, 50)).astype(np.float32)
    out = predict_tiled(fn, img, tile_size=64, overlap=16)
    np.testing.assert_allclose(out, fn(torch.from_numpy(img)[None, None])[0, 0].numpy(), atol=1e-5)


def test_one_short_axis_is_taken_whole():
    calls = []
    img = np.random.default_rng(4).normal(size=(20, 150)).astype(np.float32)
    out = predict_tiled(lambda x: calls.append(tuple(x.shape)) or x, img, tile_size=64, overlap=16)
    assert set(calls) == {(1, 1, 20, 61)}  # 3 balanced tiles of 61 px instead of 64
    np.testing.assert_allclose(out, img, rtol=1e-6, atol=1e-6)


def test_image_that_fits_is_a_single_tile():
    calls = []
    img = np.ones((64, 64), np.float32)
    predict_tiled(lambda x: calls.append(1) or x, img, tile_size=64, overlap=16)
    assert len(calls) == 1


def test_last_tile_snaps_to_edge():
    assert tile_starts(100, 32, 8) == [0, 24, 48, 68]
    assert tile_starts(32, 32, 8) == [0]


def test_balanced_tiles_cover_with_the_fewest_tiles():
    assert balanced_tile(2048, 1024, 128) == 768  # 3 tiles of 768 instead of 3 of 1024
    assert balanced_tile(500, 1024, 128) == 500
    for length, tile, ov in [(2048, 1024, 128), (999, 256, 32), (300, 256, 64)]:
        t = balanced_tile(length, tile, ov)
        assert t <= tile and len(tile_starts(length, t, ov)) == len(tile_starts(length, tile, ov))


def test_blend_weights_sum_to_one_and_ignore_the_outer_quarter():
    starts, tile, length, ov = tile_starts(200, 64, 16), 64, 200, 16
    total = np.zeros(length)
    for s, w in zip(starts, blend_weights(starts, tile, length, ov)):
        total[s:s + tile] += w
        if s > 0:
            assert np.all(w[:ov // 4] == 0)
    np.testing.assert_allclose(total[:starts[-1]], 1.0, atol=1e-12)  # inner overlaps: an exact partition of unity


def test_no_seam_on_a_smooth_frame_with_a_per_tile_offset():
    """Each tile's prediction is off by its own constant (as when a network sees only its tile's context): the
    cross-fade leaves no step at the tile boundaries, only a ramp over the overlap."""
    offsets = iter(np.random.default_rng(5).normal(0, 1, 100))
    out = predict_tiled(lambda x: x + float(next(offsets)), np.zeros((40, 300), np.float32), tile_size=64,
                        overlap=32)
    row = out[20]
    assert np.abs(np.diff(row)).max() < 0.25  # offsets of ~1 change by < 0.25 from one pixel to the next


def test_several_output_channels():
    img = np.random.default_rng(6).normal(size=(2, 50, 70)).astype(np.float32)
    out = predict_tiled(lambda x: torch.cat([x, -x], dim=1), img, tile_size=32, overlap=8)
    assert out.shape == (2, 2, 50, 70)
    np.testing.assert_allclose(out[0], img, atol=1e-5)
    np.testing.assert_allclose(out[1], -img, atol=1e-5)


def test_progress_bar_and_device_arguments(capsys):
    img = np.zeros((50, 50), np.float32)
    out = predict_tiled(lambda x: x + 1, img, tile_size=16, overlap=4, progress=True, device="cpu")
    np.testing.assert_allclose(out, img + 1, rtol=1e-6)  # blended: exact up to float rounding


@pytest.mark.parametrize("kwargs, word", [({"tile_size": 4}, "tile size"), ({"overlap": 64}, "overlap"),
                                          ({"overlap": -1}, "overlap"), ({"tile_size": 32.5}, "tile size"),
                                          ({"batch_size": 0}, "batch size")])
def test_bad_settings_raise_input_error(kwargs, word):
    with pytest.raises(EMInputError, match=word):
        predict_tiled(lambda x: x, np.zeros((40, 40), np.float32), **{"tile_size": 64, "overlap": 8, **kwargs})


def test_bad_image_and_bad_fn():
    with pytest.raises(EMInputError):
        predict_tiled(lambda x: x, np.zeros((2, 3, 4, 5), np.float32), tile_size=16, overlap=4)
    with pytest.raises(ValueError):
        predict_tiled(lambda x: x[:, :, :-1], np.zeros((20, 20), np.float32), tile_size=16, overlap=4)
    with pytest.raises(ValueError):
        predict_tiled(lambda x: x[0], np.zeros((20, 20), np.float32), tile_size=16, overlap=4)


@pytest.mark.slow
def test_8192_frame_with_64_channel_net_stays_under_3_gb():
    code = textwrap.dedent("""
        import resource, numpy as np, torch
        from em_noise.tiling import predict_tiled
        torch.set_num_threads(1)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 64, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.Conv2d(64, 1, 1)).eval()
        img = np.zeros((8192, 8192), np.float32)
        out = predict_tiled(net, img, tile_size=1024, overlap=64)
        assert out.shape == img.shape
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(res.stdout.strip().splitlines()[-1]) < 3.0  # GiB peak RSS


@pytest.mark.parametrize("shape,tile", [((40, 52), 64), ((3, 90, 75), 32)])
def test_pad_mirrors_the_border_and_crops_it_back(shape, tile):
    """pad=p equals the whole-image result on the reflect-padded frame, cropped; the frame's edge pixels then no
    longer see the convolutions' zero border (they differ from the unpadded run), the interior does not."""
    net = conv_stack(1)
    img = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    p = 5
    got = predict_tiled(net, img, tile_size=tile, overlap=12, pad=p)
    widths = ((0, 0),) * (img.ndim - 2) + ((p, p), (p, p))
    ref = whole(net, np.ascontiguousarray(np.pad(img, widths, mode="reflect")))[..., p:-p, p:-p]
    assert got.shape == img.shape and got.flags.c_contiguous
    np.testing.assert_allclose(got, ref, atol=1e-4)
    plain = predict_tiled(net, img, tile_size=tile, overlap=12)
    np.testing.assert_allclose(got[..., 3:-3, 3:-3], plain[..., 3:-3, 3:-3], atol=1e-4)
    assert np.abs(got[..., 0, :] - plain[..., 0, :]).max() > 1e-3


def test_pad_is_bounded_by_the_frame_and_refuses_negative():
    img = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(predict_tiled(lambda x: x, img, tile_size=16, overlap=4, pad=50), img)
    with pytest.raises(EMInputError, match="pad"):
        predict_tiled(lambda x: x, img, tile_size=16, overlap=4, pad=-1)
