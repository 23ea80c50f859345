"""SCGN network: statistical-characteristic-guided denoising for HRTEM (Li et al., CVPR 2026).

Layout (defaults are the published ones, ≈ 1.6 M parameters):

    head Conv3×3 1→W  →  N × SCGNBlock  →  + head features (global residual)  →  tail Conv3×3 W→1

Each block splits its W channels into a spatial half and a frequency half, runs two layers per branch with a
residual around each branch, concatenates and fuses with a Conv3×3 W→W.

* spatial layer (deviation-guided weighting): ``ReLU(BN(Conv3×3(x) · σ(Conv1×1(std₃ₓ₃(x)))))`` where
  ``std₃ₓ₃`` is the local standard deviation over 3×3 windows with reflect padding,
  ``sqrt(clamp(E[x²] − E[x]², 1e-5))`` — the deviation decides, per position and channel, how much of the
  convolution to keep (order as in the paper: conv · W → BN → ReLU).
* frequency layer (band-guided weighting): ``x1 = Conv3×3(x)``; Fourier unit on x1: ``rfft2`` (ortho) → real and
  imaginary parts stacked (2C channels) plus two channels holding the normalised vertical and horizontal frequency
  position (so the weights know the band) → Conv1×1 → BN → ReLU → channel attention → Conv1×1 → ``irfft2``;
  the layer returns ``ReLU(BN(Conv3×3(cat[x, FU(x1)])))``.

The channel attention pools average and maximum descriptors of a Conv3×3 of its input through a shared 1×1
bottleneck (ratio 16) and adds the two sigmoids, so each channel weight lies in (0, 2), as in the authors' reference
code; the Conv3×3 in front of the pooling also follows the authors'
reference code and is what brings the default network to ≈ 1.6 M parameters.

Works on any input size ≥ 2×2 px (the Fourier unit restores odd sizes exactly).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

STD_EPS = 1e-5


class SCGNConfig(BaseModel):
    """Architecture hyper-parameters; the defaults reproduce the published network."""

    model_config = ConfigDict(extra="forbid")

    in_channels: int = Field(1, ge=1)
    out_channels: int = Field(1, ge=1)
    width: int = Field(64, ge=4, description="feature channels W (split W/2 spatial + W/2 frequency)")
    n_blocks: int = Field(8, ge=1)
    std_window: int = Field(3, ge=3, description="odd window (px) of the local standard deviation")
    attention_ratio: int = Field(16, ge=1, description="channel-attention bottleneck reduction")

    @model_validator(mode="after")
    def _check(self) -> SCGNConfig:
        if self.width % 2:
            raise ValueError("width must be even (it is split into two halves)")
        if self.std_window % 2 == 0:
            raise ValueError("std_window must be odd")
        return self


def local_std(x: torch.Tensor, window: int = 3, eps: float = STD_EPS) -> torch.Tensor:
    """Per-channel standard deviation over ``window``×``window`` neighbourhoods, reflect padded; same shape as x.

    ``sqrt(clamp(E[x²] − E[x]², eps))`` with E the window mean.
    """
    pad = window // 2
    mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"
    mean = F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode=mode), window, stride=1)
    mean_sq = F.avg_pool2d(F.pad(x * x, (pad, pad, pad, pad), mode=mode), window, stride=1)
    return torch.sqrt(torch.clamp(mean_sq - mean * mean, min=eps))


class DeviationGuidedLayer(nn.Module):
    """Spatial layer: a 3×3 convolution kept per position according to the local deviation of its input."""

    def __init__(self, channels: int, std_window: int = 3):
        super().__init__()
        self.std_window = std_window
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.weight_conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def deviation_weight(self, x: torch.Tensor) -> torch.Tensor:
        """The per-position weight W = σ(Conv1×1(local std of x)) in (0, 1)."""
        return torch.sigmoid(self.weight_conv(local_std(x, self.std_window)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x) * self.deviation_weight(x)))


class ChannelAttention(nn.Module):
    """Channel weights in (0, 2): ``σ(MLP(avg)) + σ(MLP(max))`` of a Conv3×3 of the input, shared 1×1 bottleneck."""

    def __init__(self, channels: int, ratio: int = 16):
        super().__init__()
        hidden = max(1, channels // ratio)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        avg, peak = F.adaptive_avg_pool2d(y, 1), F.adaptive_max_pool2d(y, 1)
        return torch.sigmoid(self.mlp(avg)) + torch.sigmoid(self.mlp(peak))


class BandGuidedFourierUnit(nn.Module):
    """Fourier unit: 1×1 convolutions and channel attention on the spectrum, told which band each bin is."""

    def __init__(self, channels: int, ratio: int = 16):
        super().__init__()
        self.conv_in = nn.Conv2d(2 * channels + 2, 2 * channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(2 * channels)
        self.attention = ChannelAttention(2 * channels, ratio)
        self.conv_out = nn.Conv2d(2 * channels, 2 * channels, 1, bias=False)

    @staticmethod
    def band_coordinates(batch: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """(B, 2, h, w) channels: normalised vertical and horizontal position in [0, 1] of each spectrum bin."""
        v = torch.linspace(0.0, 1.0, height, dtype=like.dtype, device=like.device)
        u = torch.linspace(0.0, 1.0, width, dtype=like.dtype, device=like.device)
        return torch.stack(
            (v[:, None].expand(height, width), u[None, :].expand(height, width))
        ).expand(batch, 2, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        spec = torch.fft.rfft2(x, norm="ortho")
        z = torch.cat((spec.real, spec.imag), dim=1)
        z = torch.cat((self.band_coordinates(b, z.shape[-2], z.shape[-1], z), z), dim=1)
        z = F.relu(self.bn(self.conv_in(z)))
        z = self.conv_out(z * self.attention(z))
        re, im = z.chunk(2, dim=1)
        return torch.fft.irfft2(torch.complex(re, im), s=(h, w), norm="ortho")


class BandGuidedLayer(nn.Module):
    """Frequency layer: Conv3×3(cat[x, FU(Conv3×3 x)]) → BN → ReLU."""

    def __init__(self, channels: int, ratio: int = 16):
        super().__init__()
        self.conv_pre = nn.Conv2d(channels, channels, 3, padding=1)
        self.fourier = BandGuidedFourierUnit(channels, ratio)
        self.conv_post = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv_post(torch.cat((x, self.fourier(self.conv_pre(x))), dim=1))))


class SCGNBlock(nn.Module):
    """Spatial half and frequency half, two layers each with a residual per branch, fused by a Conv3×3."""

    def __init__(self, width: int, std_window: int = 3, ratio: int = 16):
        super().__init__()
        half = width // 2
        self.spatial = nn.Sequential(DeviationGuidedLayer(half, std_window), DeviationGuidedLayer(half, std_window))
        self.frequency = nn.Sequential(BandGuidedLayer(half, ratio), BandGuidedLayer(half, ratio))
        self.fuse = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs, xf = x.chunk(2, dim=1)
        return self.fuse(torch.cat((xs + self.spatial(xs), xf + self.frequency(xf)), dim=1))


class SCGN(nn.Module):
    """The SCGN denoiser: (B, in, H, W) → (B, out, H, W), any H, W ≥ 2 px."""

    CONFIG_KEYS = tuple(SCGNConfig.model_fields)

    def __init__(self, config: SCGNConfig | dict | None = None, **overrides):
        super().__init__()
        if isinstance(config, SCGNConfig):
            config = config.model_dump()
        self.config = SCGNConfig(**{**(config or {}), **overrides})
        cfg = self.config
        self.head = nn.Conv2d(cfg.in_channels, cfg.width, 3, padding=1)
        self.body = nn.Sequential(
            *[SCGNBlock(cfg.width, cfg.std_window, cfg.attention_ratio) for _ in range(cfg.n_blocks)]
        )
        self.tail = nn.Conv2d(cfg.width, cfg.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or min(x.shape[-2:]) < 2:
            raise ValueError(f"SCGN expects (B, C, H, W) with H, W >= 2, got {tuple(x.shape)}")
        f = self.head(x)
        return self.tail(self.body(f) + f)
