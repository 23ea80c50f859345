"""Scattering view normalization γ: closed form from the projection totals, and γ at angles without a view (numpy).

For a parallel beam every projection of a background-free series integrates to ``∫ρ dV``, so the totals
``T_v = Σ_pixels I_v`` must agree; ``γ_v = T_v / exp(mean_v log T_v)`` is the factor by which view ``v`` is brighter
than the geometric mean of the series (thickness-dependent channeling, detector gain drift), ``Π γ_v = 1``. The
model predicts ``I_v ≈ γ_v · P_v(ρ)``.
"""
from __future__ import annotations

import numpy as np


def closed_form_gamma(tilts: np.ndarray) -> np.ndarray:
    """γ ``(C,)`` of background-free tilts ``(C, H, W)`` from their totals (``Π γ = 1``)."""
    totals = np.clip(np.asarray(tilts, np.float64).reshape(len(tilts), -1).sum(1), 1e-12, None)
    logt = np.log(totals)
    return np.exp(logt - logt.mean()).astype(np.float32)


def interpolate_gamma(train_angles_deg: np.ndarray, train_gamma: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """γ at ``angles_deg`` from the training views only: linear in angle between the neighbouring training tilts
    (in log γ), the nearest training value beyond the ends. A view that was not trained on never enters."""
    a = np.asarray(train_angles_deg, np.float64)
    order = np.argsort(a)
    lg = np.log(np.clip(np.asarray(train_gamma, np.float64), 1e-12, None))
    return np.exp(np.interp(np.asarray(angles_deg, np.float64), a[order], lg[order])).astype(np.float32)
