"""sfin.model: pinned to the authors' network (parameter count, a frozen input -> output fixture of their code), any
input size, eval-mode determinism."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from em_noise.weights import count_parameters
from sfin.model import SFIN, FourierUnit

FIXTURE = Path(__file__).parent / "data" / "sfin_authors_ch16_b2.npz"


def test_reproduces_the_authors_network():
    """Input, state dict (our layout) and output of the authors' sfin.SFIN (ch=16, n_blocks=2, random weights,
    BatchNorm statistics randomised, eval mode, float64) — see tests/sfin/data/README.md."""
    d = np.load(FIXTURE)
    state = {k[len("state/"):]: torch.from_numpy(d[k]) for k in d.files if k.startswith("state/")}
    net = SFIN(width=16, blocks=2)
    net.load_state_dict(state)
    with torch.no_grad():
        got = net.double().eval()(torch.from_numpy(d["input"]).double()).numpy()
    assert got.shape == d["output"].shape == (2, 1, 40, 37)
    np.testing.assert_allclose(got, d["output"], rtol=1e-5, atol=1e-7)
    # the Fourier unit's real / imaginary layout matters: the authors' interleaved order does not fit ours
    key = "body.0.layers.0.spectral.fourier.conv.weight"
    w = state[key].clone()
    c = w.shape[0] // 2
    inter = torch.stack([torch.arange(c), torch.arange(c) + c], 1).reshape(-1)
    state[key] = w[inter]
    net.load_state_dict(state)
    with torch.no_grad():
        wrong = net.double().eval()(torch.from_numpy(d["input"]).double()).numpy()
    assert np.abs(wrong - d["output"]).max() > 1e-3


def test_published_size_has_the_published_parameter_count():
    assert count_parameters(SFIN()) == 960_193


@pytest.mark.parametrize("shape", [(1, 1, 17, 23), (2, 1, 31, 32), (1, 1, 64, 33), (1, 1, 5, 1), (1, 1, 1, 1)])
def test_output_shape_matches_input_on_any_size(shape):
    net = SFIN(width=8, blocks=2).eval()
    with torch.no_grad():
        y = net(torch.rand(*shape))
    assert y.shape == shape and torch.isfinite(y).all()


def test_published_default_architecture():
    net = SFIN()
    assert net.head.in_channels == 1 and net.head.out_channels == 64 and net.head.kernel_size == (3, 3)
    assert net.tail.in_channels == 64 and net.tail.out_channels == 1
    assert len(net.body) == 8 and all(len(block.layers) == 2 for block in net.body)
    layer = net.body[0].layers[0]
    assert layer.conv_l2l.in_channels == layer.conv_l2l.out_channels == 32
    assert layer.spectral.fourier.conv.kernel_size == (1, 1)


def test_width_and_depth_are_configurable():
    small, big = SFIN(width=16, blocks=2, layers_per_block=1), SFIN(width=32, blocks=4)
    assert count_parameters(small) < count_parameters(big) < count_parameters(SFIN())
    assert len(big.body) == 4


def test_fourier_unit_sees_the_whole_image():
    """A change in one corner moves the output in the opposite corner (global receptive field)."""
    torch.manual_seed(0)
    fu = FourierUnit(2).eval()
    x = torch.rand(1, 2, 24, 20)
    x2 = x.clone()
    x2[..., 0, 0] += 1.0
    with torch.no_grad():
        d = (fu(x2) - fu(x))[..., -1, -1].abs().max()
    assert d > 1e-6


def test_gradients_reach_every_parameter():
    net = SFIN(width=8, blocks=1)
    net(torch.rand(2, 1, 16, 16)).abs().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_eval_mode_is_deterministic_and_batch_independent():
    torch.manual_seed(0)
    net = SFIN(width=8, blocks=2).eval()
    x = torch.rand(3, 1, 20, 21)
    with torch.no_grad():
        whole = net(x)
        single = net(x[1:2])
    torch.testing.assert_close(whole[1:2], single, atol=1e-5, rtol=1e-5)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError):
        SFIN(width=1)


def _with_batchnorm_statistics(net: SFIN, seed: int = 0) -> SFIN:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return net.eval()


def test_folded_batchnorm_gives_the_same_output():
    torch.manual_seed(0)
    net = _with_batchnorm_statistics(SFIN(width=16, blocks=2))
    x = torch.rand(2, 1, 48, 40)
    with torch.no_grad():
        ref = net(x)
        folded = copy.deepcopy(net).fold_batchnorm_()
        out = folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(out, ref, atol=1e-5 * float(ref.abs().max()))


def test_predictor_folds_a_copy_and_leaves_the_net_alone():
    from em_noise.restore import make_predictor

    torch.manual_seed(1)
    net = _with_batchnorm_statistics(SFIN(width=8, blocks=1))
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        ref = net(x)
    out = make_predictor(net)(x)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 6  # 2 per SFIB + 1 per Fourier unit
    assert torch.allclose(out, ref, atol=1e-5 * float(ref.abs().max()))
