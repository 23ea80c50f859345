"""SFIN: the spatial-frequency interactive network (Li et al., CVPR 2025) for STEM image enhancement.

Architecture (defaults = the published network): a 3×3 head conv 1→``width``; ``blocks`` residual
blocks of ``layers_per_block`` SFIB layers; a long skip adding the head features back after the body;
a 3×3 tail conv ``width``→1.

An SFIB layer splits the channels into a spatial half ``x_l`` and a frequency half ``x_g`` and lets them
interact (FFC style)::

    out_l = conv_l2l(x_l) + conv_g2l(x_g)        -> BatchNorm -> ReLU
    out_g = conv_l2g(x_l) + spectral(x_g)        -> BatchNorm -> ReLU

``spectral(x)`` = conv3×3 → Fourier unit → conv3×3 fusing [x, Fourier-unit output]. The Fourier unit takes
``rfft2`` (ortho) of its input, stacks real and imaginary parts (plus two frequency-coordinate channels,
as in the reference code) as channels, applies Conv1×1 → BN → ReLU, and returns with ``irfft2`` to the
input's size, so the net works on any H×W and its receptive field is the whole image.
"""
from __future__ import annotations

import torch
from torch import nn


def _fold_bn(bn: nn.BatchNorm2d, convs: list[nn.Conv2d]) -> None:
    """Fold an eval-mode ``bn`` applied to the sum of ``convs``' outputs into their weights (the first one takes the
    whole bias); the sum of the folded convs equals ``bn`` of the original sum."""
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - a * bn.running_mean
    for c in convs:
        if c.bias is not None:
            bias = bias + a * c.bias
    for i, c in enumerate(convs):
        c.weight.mul_(a.view(-1, 1, 1, 1))
        if i == 0:
            c.bias = nn.Parameter(bias.clone())
        elif c.bias is not None:
            c.bias = None


class FourierUnit(nn.Module):
    """Pointwise convolution in the 2-D Fourier domain (global receptive field), any input size."""

    def __init__(self, channels: int, pos_encoding: bool = True):
        super().__init__()
        self.pos_encoding = pos_encoding
        extra = 2 if pos_encoding else 0
        self.conv = nn.Conv2d(2 * channels + extra, 2 * channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(2 * channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # half-precision inputs run their FFTs in float32 (half precision FFTs are restricted to power-of-two sizes)
        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
        f = torch.fft.rfft2(xf, norm="ortho")  # (B, C, H, W//2+1) complex
        wf = f.shape[-1]
        z = torch.cat([f.real, f.imag], dim=1)  # (B, 2C, H, Wf): real parts then imaginary parts
        if self.pos_encoding:
            fy = torch.linspace(0.0, 1.0, h, device=x.device, dtype=z.dtype).view(1, 1, h, 1).expand(b, 1, h, wf)
            fx = torch.linspace(0.0, 1.0, wf, device=x.device, dtype=z.dtype).view(1, 1, 1, wf).expand(b, 1, h, wf)
            z = torch.cat([fy, fx, z], dim=1)
        z = self.act(self.bn(self.conv(z.to(x.dtype)))).to(xf.dtype)
        out = torch.fft.irfft2(torch.complex(z[:, :c], z[:, c:]), s=(h, w), norm="ortho")
        return out.to(x.dtype)


class SpectralTransform(nn.Module):
    """``conv3×3 → FourierUnit`` then a conv3×3 fusing the result with the branch input."""

    def __init__(self, channels: int, pos_encoding: bool = True):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, channels, 3, padding=1)
        self.fourier = FourierUnit(channels, pos_encoding=pos_encoding)
        self.fuse = nn.Conv2d(2 * channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([x, self.fourier(self.conv_in(x))], dim=1))


class SFIB(nn.Module):
    """Spatial-frequency interactive layer on a (spatial, frequency) pair of feature maps."""

    def __init__(self, channels_l: int, channels_g: int, pos_encoding: bool = True):
        super().__init__()
        self.conv_l2l = nn.Conv2d(channels_l, channels_l, 3, padding=1)
        self.conv_g2l = nn.Conv2d(channels_g, channels_l, 3, padding=1)
        self.conv_l2g = nn.Conv2d(channels_l, channels_g, 3, padding=1)
        self.spectral = SpectralTransform(channels_g, pos_encoding=pos_encoding)
        self.bn_l = nn.BatchNorm2d(channels_l)
        self.bn_g = nn.BatchNorm2d(channels_g)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x_l: torch.Tensor, x_g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_l = self.conv_l2l(x_l) + self.conv_g2l(x_g)
        out_g = self.conv_l2g(x_l) + self.spectral(x_g)
        return self.act(self.bn_l(out_l)), self.act(self.bn_g(out_g))


class SFIBlock(nn.Module):
    """``layers`` SFIB layers with a residual connection around them."""

    def __init__(self, width: int, layers: int = 2, pos_encoding: bool = True):
        super().__init__()
        self.split = width // 2
        self.layers = nn.ModuleList(
            SFIB(self.split, width - self.split, pos_encoding=pos_encoding) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_l, x_g = x[:, : self.split], x[:, self.split :]
        y_l, y_g = x_l, x_g
        for layer in self.layers:
            y_l, y_g = layer(y_l, y_g)
        return torch.cat([x_l + y_l, x_g + y_g], dim=1)


class SFIN(nn.Module):
    """Spatial-frequency interactive network; maps (B, 1, H, W) → (B, 1, H, W) for any H, W ≥ 1.

    Args:
        width: feature channels (split half spatial, half frequency); published: 64.
        blocks: residual blocks; published: 8.
        layers_per_block: SFIB layers per block; published: 2.
        pos_encoding: frequency-coordinate channels in the Fourier unit (as in the reference code).
    """

    CONFIG_KEYS = ("width", "blocks", "layers_per_block", "pos_encoding")
    # a state dict without a card: an enhancement network, used as is for either detector
    DEFAULT_IO = {"modes": ["haadf", "bf"], "outputs": [{"name": "enhanced", "scale": "target"}]}

    def __init__(self, width: int = 64, blocks: int = 8, layers_per_block: int = 2, pos_encoding: bool = True):
        super().__init__()
        if width < 2 or blocks < 1 or layers_per_block < 1:
            raise ValueError("SFIN needs width >= 2, blocks >= 1 and layers_per_block >= 1")
        self.head = nn.Conv2d(1, width, 3, padding=1)
        self.body = nn.Sequential(*(SFIBlock(width, layers_per_block, pos_encoding) for _ in range(blocks)))
        self.tail = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        return self.tail(self.body(feat) + feat)

    @torch.no_grad()
    def fold_batchnorm_(self) -> SFIN:
        """Inference only: fold every BatchNorm (its running statistics) into the convolutions before it, in place,
        and put the network in eval mode. Same outputs (to float rounding), fewer passes over the feature maps."""
        self.eval()
        for block in self.body:
            for layer in block.layers:
                if isinstance(layer.bn_l, nn.BatchNorm2d):
                    _fold_bn(layer.bn_l, [layer.conv_l2l, layer.conv_g2l])
                    _fold_bn(layer.bn_g, [layer.conv_l2g, layer.spectral.fuse])
                    layer.bn_l, layer.bn_g = nn.Identity(), nn.Identity()
                fu = layer.spectral.fourier
                if isinstance(fu.bn, nn.BatchNorm2d):
                    _fold_bn(fu.bn, [fu.conv])
                    fu.bn = nn.Identity()
        return self

    @classmethod
    def config_from_state(cls, state: dict[str, torch.Tensor]) -> dict:
        """Init args recovered from the shapes of a state dict (ValueError when it is not an SFIN's)."""
        try:
            width = int(state["head.weight"].shape[0])
            blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("body."))
            layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("body.0.layers."))
            fu = state["body.0.layers.0.spectral.fourier.conv.weight"]
        except (KeyError, ValueError, IndexError):
            raise ValueError("not an SFIN state dict") from None
        pos_encoding = int(fu.shape[1]) == int(fu.shape[0]) + 2
        return {"width": width, "blocks": blocks, "layers_per_block": layers, "pos_encoding": pos_encoding}
