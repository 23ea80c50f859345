"""Shared helpers of the sfin tests: a tiny SFIN saved as a state dict, synthetic frames written to disk."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sfin.model import SFIN


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A randomly initialised tiny SFIN (width 8, 1 block) saved as a state dict, BN statistics perturbed."""
    torch.manual_seed(0)
    net = SFIN(width=8, blocks=1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def haadf_frame() -> tuple[np.ndarray, float]:
    """A small synthetic noisy HAADF frame (0–255 scale) and its pixel size (Å)."""
    from em_noise.synth import SynthConfig, synthesize

    s = synthesize(SynthConfig(mode="haadf", size=96), seed=[123, 0])
    return s["noisy"], s["pixel_size_A"]
