"""Perlin gradient noise (Ken Perlin's improved noise), vectorised, with a random permutation per field.

The SFIN authors' STEM generator draws its background and its two-structure mixing mask with this noise:
``pnoise2(x / scale, y / scale, octaves=6, persistence=0.5, lacunarity=2)`` on integer pixel coordinates,
mapped to ``(v + 1) / 2``. Each octave ``i`` adds ``persistence**i · noise(lacunarity**i · p)`` and the sum is
divided by the sum of the amplitudes, so ``v`` lies in [−1, 1] (in practice about ±0.4) and ``(v + 1) / 2`` spans
roughly 0.3–0.7 with a standard deviation near 0.07 on a 256² field.
"""
from __future__ import annotations

import numpy as np

# The 16 gradient directions of improved noise, projected on the image plane (x, y components).
_GRAD2 = np.array([(1, 1), (-1, 1), (1, -1), (-1, -1), (1, 0), (-1, 0), (1, 0), (-1, 0),
                   (0, 1), (0, -1), (0, 1), (0, -1), (1, 0), (-1, 0), (0, -1), (0, 1)], dtype=np.float64)


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def _octave(x: np.ndarray, y: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """One octave of 2-D gradient noise at coordinates (x, y) (broadcastable), lattice hashed by ``perm``."""
    xi, yi = np.floor(x), np.floor(y)
    fx, fy = x - xi, y - yi
    i, j = xi.astype(np.int64) & 255, yi.astype(np.int64) & 255
    ii, jj = (i + 1) & 255, (j + 1) & 255

    def grad(hx: np.ndarray, hy: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        g = _GRAD2[perm[perm[hx] + hy] & 15]
        return g[..., 0] * dx + g[..., 1] * dy

    u, v = _fade(fx), _fade(fy)
    n00 = grad(i, j, fx, fy)
    n10 = grad(ii, j, fx - 1.0, fy)
    n01 = grad(i, jj, fx, fy - 1.0)
    n11 = grad(ii, jj, fx - 1.0, fy - 1.0)
    return (n00 + u * (n10 - n00)) * (1.0 - v) + (n01 + u * (n11 - n01)) * v


def perlin_noise(shape: tuple[int, int], rng: np.random.Generator, scale_px: float = 100.0, octaves: int = 6,
                 persistence: float = 0.5, lacunarity: float = 2.0) -> np.ndarray:
    """Fractal Perlin noise in [−1, 1] on an (H, W) pixel grid; the coarsest lattice cell is ``scale_px`` px."""
    h, w = int(shape[0]), int(shape[1])
    perm = np.tile(rng.permutation(256), 2)
    y = (np.arange(h, dtype=np.float64) / float(scale_px))[:, None]
    x = (np.arange(w, dtype=np.float64) / float(scale_px))[None, :]
    total = np.zeros((h, w))
    amp, freq, norm = 1.0, 1.0, 0.0
    for _ in range(int(octaves)):
        total += amp * _octave(x * freq, y * freq, perm)
        norm += amp
        amp *= persistence
        freq *= lacunarity
    return total / norm if norm > 0 else total


def perlin_field(shape: tuple[int, int], rng: np.random.Generator, scale_px: float = 100.0, octaves: int = 6,
                 persistence: float = 0.5, lacunarity: float = 2.0) -> np.ndarray:
    """``(perlin_noise + 1) / 2``: the published generator's background / mask field, about 0.3–0.7."""
    return 0.5 * (perlin_noise(shape, rng, scale_px, octaves, persistence, lacunarity) + 1.0)
