"""em_noise.restore: intensity scales, the Runner's tiling, output containers, the many-inputs convention, previews."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from em_noise.cliutil import resolve_device, run
from em_noise.errors import EMInputError
from em_noise.io import read_image, write_image
from em_noise.restore import (
    PAPER_SCALE,
    Runner,
    _scale_bar_nm,
    output_ext,
    residual,
    restore_array,
    restore_file,
    run_inputs,
    unwrap,
    write_preview,
)
from em_noise.weights import Architecture, Inference, IOSpec, ModelCard, Output


def _double(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


def _card(outputs=(("enhanced", "target"),), modes=("haadf", "bf"), invert=("bf",), fov=256, tile=1024, overlap=128):
    return ModelCard(name="t", architecture=Architecture(cls="torch.nn.Identity"), parameters=0,
                     io=IOSpec(modes=list(modes), invert=list(invert), outputs=[Output(name=n, scale=s)
                                                                               for n, s in outputs]),
                     field_of_view_px=fov, inference=Inference(tile_size=tile, overlap=overlap))


def test_input_scale_is_mapped_back_to_input_units():
    # Prediction y = 2x in normalized units must come back as 2*(v - lo) + lo in input units.
    data = np.random.default_rng(0).uniform(1000, 5000, (40, 50)).astype(np.float32)
    out = restore_array(_double, data, tile_size=32, overlap=8)
    lo, hi = np.percentile(data.astype(np.float64), [0.1, 99.9])
    np.testing.assert_allclose(out, 2 * (data - lo) + lo, rtol=1e-4)


def test_identity_predictor_returns_input_for_each_frame_of_a_stack():
    data = np.random.default_rng(1).normal(0, 1, (3, 33, 47)).astype(np.float32) * np.array([1, 10, 100])[:, None, None]
    out = restore_array(lambda x: x, data.astype(np.float32), tile_size=16, overlap=4)
    np.testing.assert_allclose(out, data, rtol=1e-4, atol=1e-3)


def test_target_scale_is_the_paper_scale_or_the_input_units():
    data = np.random.default_rng(2).uniform(300, 900, (24, 24)).astype(np.float32)
    lo, hi = np.percentile(data.astype(np.float64), [0.1, 99.9])
    x = (data - lo) / (hi - lo)
    paper = restore_array(lambda t: t, data, scales=("target",), units="paper")
    np.testing.assert_allclose(paper, PAPER_SCALE * x, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(restore_array(lambda t: t, data, scales=("target",), units="input"), data, rtol=1e-4)
    with pytest.raises(EMInputError, match="units"):
        restore_array(lambda t: t, data, scales=("target",), units="counts")


def test_inverted_mode_inverts_before_and_after_the_network_but_not_a_map():
    data = np.random.default_rng(3).uniform(0, 1, (20, 20)).astype(np.float32)
    lo, hi = np.percentile(data.astype(np.float64), [0.1, 99.9])
    x = (data - lo) / (hi - lo)
    seen = []

    def net(t):
        seen.append(t.clone())
        return torch.cat([t ** 2, t], dim=1)  # an image channel and a map channel

    out = restore_array(net, data, scales=("target", "map"), invert=True, units="paper")
    np.testing.assert_allclose(seen[0][0, 0].numpy(), 1 - x, atol=1e-5)
    np.testing.assert_allclose(out[0], PAPER_SCALE * (1 - (1 - x) ** 2), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(out[1], 1 - x, atol=1e-5)


def test_runner_uses_the_card_and_names_its_outputs():
    runner = Runner(torch.nn.Identity(), _card(outputs=(("denoised", "input"),), modes=("hrtem",), invert=()))
    assert (runner.tile_size, runner.overlap) == (1024, 128)
    data = np.random.default_rng(4).normal(100, 5, (2, 30, 30)).astype(np.float32)
    out = runner.run(data, mode="hrtem")
    assert list(out) == ["denoised"] and out["denoised"].shape == data.shape
    with pytest.raises(EMInputError, match="not haadf"):
        runner.run(data, mode="haadf")
    assert runner.provenance()["model"] == "t"


def test_runner_pads_each_frame_as_its_card_says():
    """A card's inference.pad_px reaches the tiler: a net that sees its zero border differs at the edge only."""
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
    torch.nn.init.constant_(conv.weight, 1.0 / 9)
    card = _card(outputs=(("denoised", "input"),), modes=("hrtem",), invert=())
    padded = card.model_copy(update={"inference": Inference(tile_size=1024, overlap=128, pad_px=4)})
    data = np.random.default_rng(6).normal(100, 5, (30, 30)).astype(np.float32)
    plain, mirrored = (Runner(conv.eval(), c).run(data, mode="hrtem")["denoised"] for c in (card, padded))
    np.testing.assert_allclose(mirrored[1:-1, 1:-1], plain[1:-1, 1:-1], rtol=1e-5)
    assert np.abs(mirrored[0] - plain[0]).max() > 1.0  # the zero border pulls the unpadded edge down


@pytest.mark.parametrize("tile, overlap, word", [(128, None, "at least 256"), (512, 300, "overlap")])
def test_runner_refuses_tiles_below_the_field_of_view(tile, overlap, word):
    with pytest.raises(EMInputError, match=word):
        Runner(torch.nn.Identity(), _card(), tile_size=tile, overlap=overlap)
    assert Runner(torch.nn.Identity(), _card(), tile_size=256).overlap == 32  # tile / 8 by default


def test_output_container():
    assert output_ext("a.png") == ".tif" and output_ext("a.dm4") == ".tif" and output_ext("a.mrc") == ".mrc"
    assert output_ext("a.png", uint8=True) == ".png" and output_ext("a.mrc", uint8=True) == ".tif"


def test_png_in_float_tiff_out_with_pixel_size(tmp_path):
    src = write_image(tmp_path / "f.png", np.random.default_rng(5).integers(0, 255, (24, 24)).astype(np.float32))
    runner = Runner(torch.nn.Identity(), _card(), tile_size=256)
    out = tmp_path / "f.enhanced.tif"
    restore_file(runner, src, out, output="enhanced", mode="haadf", preview=tmp_path / "p.png")
    img = read_image(out)
    assert img.metadata["dtype"] == "float32" and img.data.max() > 250 and img.data.min() < 5
    assert (tmp_path / "p.png").stat().st_size > 0
    src = write_image(tmp_path / "g.tif", np.ones((8, 8), np.float32), pixel_size_A=0.85)
    restore_file(runner, src, tmp_path / "g.out.tif", output="enhanced", uint8=True)
    img = read_image(tmp_path / "g.out.tif")
    assert img.metadata["dtype"] == "uint8" and img.pixel_size_A == pytest.approx(0.85)


def test_run_inputs_skips_bad_inputs_reports_them_and_exits_2(tmp_path, capsys):
    good = write_image(tmp_path / "good.tif", np.ones((8, 8), np.float32))
    exists = write_image(tmp_path / "old.tif", np.ones((8, 8), np.float32))
    (tmp_path / "old.out.tif").write_bytes(b"keep")
    done, loads = [], []

    def process(model, path, outs):
        if path.name == "missing.tif":
            raise EMInputError(path, "no such file")
        done.append(path.name)
        return f"{path} ok"

    rc = run_inputs([tmp_path / "missing.tif", exists, good], lambda p: [p.with_name(p.stem + ".out.tif")],
                    lambda: loads.append(1), process, prog="tool", overwrite=False)
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and done == ["good.tif"] and loads == [1]
    assert len([e for e in err if e.startswith("tool: error:")]) == 2
    assert (tmp_path / "old.out.tif").read_bytes() == b"keep"
    # nothing left to do: the model is never loaded
    assert run_inputs([exists], lambda p: [p.with_name(p.stem + ".out.tif")], lambda: loads.append(1), process,
                      prog="tool", overwrite=False) == 2 and loads == [1]
    assert run_inputs([good], lambda p: [p], lambda: None, process, prog="tool", overwrite=True) == 2  # the input


class _Axis:
    def __init__(self, scale, units):
        self.scale, self.units = scale, units


class _Signal2D:
    """The part of hyperspy's Signal2D that the APIs use."""

    def __init__(self, data, scale=0.02, units="nm"):
        self.data = data
        self.axes_manager = type("AM", (), {"signal_axes": (_Axis(scale, units), _Axis(scale, units))})()

    def deepcopy(self):
        ax = self.axes_manager.signal_axes[0]
        return _Signal2D(self.data.copy(), ax.scale, ax.units)


def test_unwrap_arrays_and_signals():
    data, px, rewrap = unwrap(np.zeros((4, 5)))
    assert data.dtype == np.float32 and px is None and rewrap(data) is data
    sig = _Signal2D(np.ones((6, 7)))
    data, px, rewrap = unwrap(sig)
    assert px == pytest.approx(0.2) and rewrap(data * 2).data.max() == 2 and sig.data.max() == 1
    assert unwrap(sig, pixel_size_A=0.5)[1] == 0.5
    with pytest.raises(EMInputError):
        unwrap(np.zeros(5))
    with pytest.raises(EMInputError, match="pixel_size_A"):
        unwrap(np.zeros((4, 4)), pixel_size_A=-1.0)


def test_hyperspy_signal_if_installed():
    hs = pytest.importorskip("hyperspy.api")
    sig = hs.signals.Signal2D(np.ones((6, 7), np.float32))
    sig.axes_manager[0].scale = sig.axes_manager[1].scale = 0.05
    sig.axes_manager[0].units = sig.axes_manager[1].units = "nm"
    data, px, rewrap = unwrap(sig)
    assert px == pytest.approx(0.5) and rewrap(data).axes_manager[0].scale == pytest.approx(0.05)


def test_scale_bar_and_residual():
    assert _scale_bar_nm(512, 0.1) == (1.0, 100.0)  # 5.12 nm wide -> a 1 nm bar
    assert _scale_bar_nm(1000, 2.0)[0] == 20.0  # 200 nm wide -> 20 nm (a fifth would be 40)
    a = np.random.default_rng(6).normal(size=(16, 16))
    np.testing.assert_allclose(residual(a, 3 * a + 7), 0, atol=1e-5)  # another scale: fitted away


def test_preview_is_written(tmp_path):
    a = np.random.default_rng(7).normal(size=(2, 32, 32)).astype(np.float32)
    p = write_preview(tmp_path / "x.png", a, a * 2, name="x.tif", pixel_size_A=0.3)
    from PIL import Image

    assert Image.open(p).size == (1500, 560)


def test_run_turns_input_errors_into_exit_2(capsys):
    def body(argv):
        raise EMInputError("x.mrc", "broken\nheader")

    assert run(body, [], prog="tool") == 2
    assert capsys.readouterr().err == "tool: error: x.mrc: broken header\n"


def test_cuda_request_without_cuda_is_an_input_error():
    if torch.cuda.is_available():
        pytest.skip("machine has CUDA")
    with pytest.raises(EMInputError, match="cuda"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
