"""Shared fixtures: tiny simulated tilt series written as real files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from denza_gaussian.phantoms import make_phantom, simulate_tilts, tilt_angles
from em_noise.io import write_image

torch.set_num_threads(1)  # 2 shared cores: small tensors run faster on one thread than oversubscribed on two


def write_series(folder: Path, name: str = "tilts", size: int = 24, n_views: int = 9, angle_ext: str = ".tlt",
                 gain_jitter: float = 0.0, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """A small faceted-particle tilt series as ``<name>.mrc`` + angle file; returns (path, angles, volume)."""
    vol = make_phantom("faceted", size, seed=seed)
    angles = tilt_angles(n_views, 60.0)
    sim = simulate_tilts(vol, angles, peak_counts=500.0, gain_jitter=gain_jitter, background_counts=5.0, seed=seed)
    path = folder / f"{name}.mrc"
    write_image(path, sim["noisy"], pixel_size_A=3.0, volume=False)
    if angle_ext:
        path.with_suffix(angle_ext).write_text("".join(f"{a:.3f}\n" for a in angles))
    return path, angles, vol


@pytest.fixture
def series_file(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    return write_series(tmp_path)


@pytest.fixture
def make_series():
    """The :func:`write_series` factory (test modules cannot import conftest under --import-mode=importlib)."""
    return write_series
