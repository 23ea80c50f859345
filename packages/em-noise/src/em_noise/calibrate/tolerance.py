"""Round-trip tolerances of the calibration, the search ranges of its fits, and the identifiability rule."""
from __future__ import annotations

import math
from typing import Any

from em_noise.params import get_value

TOLERANCE = {  # (relative, absolute): the round trip holds |estimate − true| <= rel·|true| + abs
    "haadf": {"pointwise.k": (0.2, 0.005), "pointwise.b": (0.2, 0.5), "pointwise.lam": (0.0, 0.05),
              "scan.k": (0.0, 0.03), "scan.b": (0.0, 1.2), "background.offset": (0.0, 12.0),
              "background.amplitude": (0.2, 0.0)},
    "bf": {"pointwise.k": (0.2, 0.005), "pointwise.b": (0.2, 0.0), "pointwise.lam": (0.0, 0.15),
           "scan.k": (0.0, 0.03), "scan.b": (0.0, 1.2), "background.offset": (0.0, 30.0),
           "background.amplitude": (0.2, 0.0)},
    "hrtem": {"column.sigma": (0.2, 0.0), "pointwise.k": (0.2, 0.0), "pointwise.b": (0.2, 1.0),
              "dose_e_per_A2": (0.3, 0.0)},
}
IDENT_SE_FRACTION = 0.5  # a parameter is unidentified when its standard error exceeds this share of its tolerance

# Search ranges of the fits (the model's 0–255 scale): an estimate at an end is clipped there and declared
# unidentified (one image then gives only a bound).  Scan b = 3.4 is std(0) = 0.
SEARCH_RANGES = {
    "stem": {"background.offset": (-128.0, 255.0), "background.amplitude": (0.0, 765.0), "scan.k": (-1.0, 1.0),
             "scan.b": (3.4, 40.0), "pointwise.k": (-1.0, 1.0), "pointwise.b": (0.0, 100.0),
             "pointwise.lam": (-0.2, 1.0)},
    "hrtem": {"column.sigma": (0.0, 60.0), "pointwise.k": (0.0, 1.0), "pointwise.b": (0.0, 100.0)},
}


def param_value(params: Any, key: str) -> float | None:
    """The value at ``key`` of a params dict or model: ``"group.name"`` or a top-level name (``dose_e_per_A2``)."""
    return get_value(params, key)


def within_tolerance(mode: str, key: str, true: float | None, estimate: float | None) -> bool:
    """|estimate − true| ≤ rel·|true| + abs (``TOLERANCE``); for the dose, null (no shot noise) matches only null."""
    if true is None or estimate is None:
        return true is None and estimate is None
    rel, ab = TOLERANCE[mode][key]
    return abs(estimate - true) <= rel * abs(true) + ab


def tolerance_width(mode: str, key: str, estimate: float) -> float:
    """Half-width ``rel·|estimate| + abs`` of the stated tolerance, evaluated at the estimate (not the truth)."""
    rel, ab = TOLERANCE[mode][key]
    return rel * abs(estimate) + ab


def too_uncertain(mode: str, errors: dict[str, float], values: dict[str, float]) -> list[str]:
    """Keys whose standard error exceeds ``IDENT_SE_FRACTION`` of their tolerance half-width (NaN counts)."""
    return [key for key, se in errors.items()
            if not se <= IDENT_SE_FRACTION * tolerance_width(mode, key, values[key])]


def clip_to_search(values: dict[str, float], kind: str) -> tuple[dict[str, float], list[str]]:
    """``values`` clipped to ``SEARCH_RANGES[kind]``, and the keys that were at or beyond an end."""
    out, at_limit = dict(values), []
    for key, (lo, hi) in SEARCH_RANGES[kind].items():
        if key not in out or out[key] is None:
            continue
        v = float(out[key])
        if not math.isfinite(v) or v <= lo or v >= hi:
            at_limit.append(key)
        out[key] = min(max(v, lo), hi) if math.isfinite(v) else lo
    return out, at_limit
