"""Axis units as vendors and rosettasciio spell them: lengths converted to Å, other kinds recognised."""
from __future__ import annotations

import re
from typing import Any

# Length unit (cleaned spelling, see :func:`_clean`) -> Å.
_LENGTH_A = {
    **dict.fromkeys(("a", "å", "ang", "angstrom", "angstroms", "angström", "ångström"), 1.0),
    **dict.fromkeys(("pm", "picometer", "picometers", "picometre", "picometres"), 0.01),
    **dict.fromkeys(("nm", "nanometer", "nanometers", "nanometre", "nanometres"), 10.0),
    **dict.fromkeys(("µm", "um", "µ", "micron", "microns", "micrometer", "micrometers", "micrometre", "micrometres"),
                    1e4),  # pint writes micron as µ
    **dict.fromkeys(("mm", "millimeter", "millimeters", "millimetre", "millimetres"), 1e7),
    **dict.fromkeys(("cm", "centimeter", "centimeters", "centimetre", "centimetres"), 1e8),
    **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), 1e10),
}
_ENERGY = {"ev", "kev", "mev", "gev", "electronvolt", "electronvolts"}
_DEGREES = {"deg", "degree", "degrees", "°"}
_ANGLE = {"rad", "mrad", "µrad", "urad", *_DEGREES}
_TIME = {"s", "ms", "µs", "us", "ns", "sec", "second", "seconds", "min", "h"}
_NONE = {"", "<undefined>", "undefined", "none", "px", "pixel", "pixels", "a.u.", "au", "arb.units", "counts"}


def _clean(unit: Any) -> str | None:
    """One spelling per unit: text, lower case, one µ and one Å, no brackets, underscores or spaces."""
    if unit is None:
        return None
    if isinstance(unit, bytes):
        unit = unit.decode("latin-1", "ignore")
    s = str(unit).strip().replace("\x00", "")
    s = s.replace("\\u00b5", "µ").replace("\\u00c5", "Å").replace("\\u212b", "Å")
    s = s.replace("\u03bc", "µ").replace("\u212b", "Å")  # Greek mu, Angstrom sign
    s = s.lower()
    s = re.sub(r"[\[\]_\s]", "", s)  # Berkeley EMD writes '[n_m]' or 'n_m' for nm
    return s


def length_to_A(unit: Any) -> float | None:
    """Å per ``unit`` for a length unit ('nm', 'n_m', 'Å', 'A', 'µm', 'um', 'micron', 'pm', 'm', ...), else None."""
    s = _clean(unit)
    return None if s is None else _LENGTH_A.get(s)


def is_reciprocal(unit: Any) -> bool:
    """True for reciprocal lengths ('1/nm', '1 / nm', 'nm^-1', '1/Å', '1/meters'), the units of diffraction."""
    s = _clean(unit)
    if not s:
        return False
    if s.startswith("1/"):
        return True
    for suffix in ("^-1", "-1", "⁻¹", "**-1"):
        if s.endswith(suffix) and s[: -len(suffix)] in _LENGTH_A:
            return True
    return False


def is_degrees(unit: Any) -> bool:
    """True for angles in degrees ('deg', 'degree', '°'): a tilt axis."""
    return _clean(unit) in _DEGREES


def unit_kind(unit: Any) -> str:
    """'length', 'reciprocal', 'energy', 'angle', 'time', 'none' (no or undefined unit) or 'other'."""
    s = _clean(unit)
    if s is None or s in _NONE:
        return "none"
    if s in _LENGTH_A:
        return "length"
    if is_reciprocal(unit):
        return "reciprocal"
    if s in _ENERGY:
        return "energy"
    if s in _ANGLE:
        return "angle"
    if s in _TIME:
        return "time"
    return "other"
