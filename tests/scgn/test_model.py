"""SCGN architecture: pinned to the authors' network (parameter count, a frozen input -> output fixture of their
code), the deviation weighting against a direct numpy reference, sizes."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from em_noise.weights import count_parameters
from scgn.model import SCGN, BandGuidedFourierUnit, ChannelAttention, DeviationGuidedLayer, SCGNConfig, local_std

FIXTURE = Path(__file__).parent / "data" / "scgn_authors_ch16_b2.npz"


def _authors_fixture():
    """Input, state dict (our layout) and output of the authors' convLast_std.Net (ch=16, n_blocks=2, random
    weights, BatchNorm statistics randomised, eval mode, float64) — see tests/scgn/data/README.md."""
    d = np.load(FIXTURE)
    state = {k[len("state/"):]: torch.from_numpy(d[k]) for k in d.files if k.startswith("state/")}
    net = SCGN(width=16, n_blocks=2)
    net.load_state_dict(state)
    return net.double().eval(), torch.from_numpy(d["input"]).double(), d["output"]


def test_reproduces_the_authors_network():
    net, x, expected = _authors_fixture()
    with torch.no_grad():
        got = net(x).numpy()
    assert got.shape == expected.shape == (2, 1, 40, 37)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_the_fixture_tells_the_cbam_attention_apart(monkeypatch):
    """σ(MLP(avg) + MLP(max)) (the CBAM form) instead of the authors' σ(MLP(avg)) + σ(MLP(max)) misses the fixture."""
    def cbam(self, x):
        y = self.conv(x)
        return torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(y, 1)) + self.mlp(F.adaptive_max_pool2d(y, 1)))

    net, x, expected = _authors_fixture()
    monkeypatch.setattr(ChannelAttention, "forward", cbam)
    with torch.no_grad():
        got = net(x).numpy()
    assert np.abs(got - expected).max() > 1e-3


def test_published_size_has_the_published_parameter_count():
    assert count_parameters(SCGN()) == 1_640_641


def _np_local_std(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Direct reference: loop over 3×3 windows of the reflect-padded (C, H, W) array."""
    c, h, w = x.shape
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    out = np.empty_like(x)
    for k in range(c):
        for i in range(h):
            for j in range(w):
                win = p[k, i : i + 3, j : j + 3]
                out[k, i, j] = np.sqrt(max((win**2).mean() - win.mean() ** 2, eps))
    return out


def _np_conv3x3(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Zero-padded 3×3 cross-correlation, (C, H, W) → (O, H, W)."""
    c, h, w = x.shape
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((weight.shape[0], h, w))
    for o in range(weight.shape[0]):
        for i in range(h):
            for j in range(w):
                out[o, i, j] = (p[:, i : i + 3, j : j + 3] * weight[o]).sum() + bias[o]
    return out


def test_local_std_matches_numpy_reference():
    x = torch.randn(1, 2, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[0, 1, :2, :2] = 0.5  # a flat patch exercises the clamp

    got = local_std(x)[0].numpy()

    np.testing.assert_allclose(got, _np_local_std(x[0].numpy()), rtol=1e-10, atol=1e-12)


def test_deviation_guided_layer_matches_numpy_reference():
    torch.manual_seed(1)
    layer = DeviationGuidedLayer(channels=2).double().eval()
    with torch.no_grad():  # non-trivial BN statistics so the BN step is really checked
        layer.bn.running_mean.copy_(torch.tensor([0.3, -0.2]))
        layer.bn.running_var.copy_(torch.tensor([2.0, 0.5]))
        layer.bn.weight.copy_(torch.tensor([1.5, 0.7]))
        layer.bn.bias.copy_(torch.tensor([0.1, 0.4]))
    x = torch.randn(1, 2, 5, 7, dtype=torch.float64)

    got = layer(x)[0].detach().numpy()

    xn = x[0].numpy()
    w1 = layer.weight_conv.weight.detach().numpy()[:, :, 0, 0]
    weight = 1.0 / (1.0 + np.exp(-np.einsum("oc,chw->ohw", w1, _np_local_std(xn))))
    conv = _np_conv3x3(xn, layer.conv.weight.detach().numpy(), layer.conv.bias.detach().numpy())
    bn = layer.bn
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()[:, None, None]
    shift = (bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    expected = np.maximum((conv * weight) * scale + shift[:, None, None], 0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-10)
    assert (expected > 0).any() and (expected == 0).any()  # both ReLU regimes present


def test_deviation_weight_depends_on_local_deviation():
    torch.manual_seed(2)
    layer = DeviationGuidedLayer(channels=1).eval()
    with torch.no_grad():
        layer.weight_conv.weight.fill_(5.0)
    flat = torch.zeros(1, 1, 8, 8)
    rough = flat.clone()
    rough[..., ::2, :] = 1.0

    w_flat, w_rough = layer.deviation_weight(flat), layer.deviation_weight(rough)

    assert w_rough.mean() > w_flat.mean() + 0.3


@pytest.mark.parametrize("shape", [(1, 1, 17, 23), (2, 1, 32, 31), (1, 1, 2, 5), (1, 1, 45, 45)])
def test_any_input_size(shape):
    net = SCGN(width=8, n_blocks=2).eval()
    x = torch.rand(*shape)

    with torch.no_grad():
        y = net(x)

    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_fourier_unit_band_coordinates():
    coords = BandGuidedFourierUnit.band_coordinates(2, 5, 4, torch.zeros(1))

    assert coords.shape == (2, 2, 5, 4)
    torch.testing.assert_close(coords[0, 0, :, 0], torch.linspace(0, 1, 5))
    torch.testing.assert_close(coords[1, 1, 0, :], torch.linspace(0, 1, 4))


def test_gradients_reach_every_parameter():
    net = SCGN(width=8, n_blocks=1)
    loss = net(torch.rand(2, 1, 16, 15)).abs().mean()
    loss.backward()

    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_config_validation():
    with pytest.raises(ValueError):
        SCGNConfig(width=33)
    with pytest.raises(ValueError):
        SCGNConfig(unknown=1)
    assert SCGN(SCGNConfig(width=16, n_blocks=2)).config.width == 16


def test_too_small_input_is_rejected():
    with pytest.raises(ValueError):
        SCGN(width=8, n_blocks=1)(torch.rand(1, 1, 1, 8))
