"""Noise parameters: one versioned pydantic model per imaging mode, checked once, read from and written to JSON.

A parameter file is a JSON object ``{"schema": "em-noise/noise-params", "version": 2, "mode": ..., ...}`` with the
groups of its mode (STEM: ``background``, ``scan``, ``pointwise``, ``detector``; HRTEM: ``column``,
``pointwise``, ``mtf_sigma_px``), the generic options (``dose_e_per_A2``, ``read_sigma``, ``jitter_px``) and,
from a calibration, ``intensity`` (the map from the model's 0–255 scale to the image's own units),
``calibration`` (diagnostics), ``source`` and ``pixel_size_A``.  Every value must lie in its allowed range
(``RANGES``, 0–255 units); a file that breaks one is refused with one line naming the file, the key and the range.
The ranges are wide enough for every draw of the published priors (a pointwise ``b`` may be negative there: the
scale ``max(k I + b, 0)`` is floored at 0).  Version-1 files load with their values unchanged.
"""
from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from em_noise.errors import EMInputError

SCHEMA = "em-noise/noise-params"
VERSION = 2
MODES = ("haadf", "bf", "hrtem")
STEM_MODES = ("haadf", "bf")
KNOT_SPACING_PX = 10.0  # the published spline: int(W / 10 + 1) knots over a row of W px
SCAN_G_MAX = 80.0  # Sobel magnitude at which the scan-noise std saturates

_COMMON = {"dose_e_per_A2": (1e-6, 1e9), "read_sigma": (0.0, 255.0), "jitter_px": (0.0, 10.0)}
RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "stem": {"background.offset": (-255.0, 255.0), "background.amplitude": (0.0, 765.0),
             "background.scale_px": (1.0, 1e5), "background.octaves": (1, 16), "background.persistence": (0.01, 1.0),
             "background.lacunarity": (1.0, 8.0), "scan.k": (-2.0, 2.0), "scan.b": (-20.0, 70.0),
             "scan.knot_spacing_px": (1.0, 1e4), "scan.g_max": (1.0, 1e4), "pointwise.k": (-2.0, 2.0),
             "pointwise.b": (-255.0, 255.0), "pointwise.lam": (-1.0, 2.0), **_COMMON},
    "hrtem": {"column.sigma": (0.0, 255.0), "pointwise.k": (-2.0, 2.0), "pointwise.b": (0.0, 255.0),
              "mtf_sigma_px": (0.0, 10.0), **_COMMON},
}


def _in(kind: str, key: str, default: Any = ..., **kw: Any) -> Any:
    lo, hi = RANGES[kind][key]
    return Field(default, ge=lo, le=hi, **kw)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class Background(_Part):
    """Smooth background ``offset + amplitude · (v + 1)/2`` (v fractal Perlin noise), 0–255 units."""

    offset: float = _in("stem", "background.offset", 25.0)
    amplitude: float = _in("stem", "background.amplitude", 75.0)
    scale_px: float = _in("stem", "background.scale_px", 100.0, description="coarsest Perlin cell (px)")
    octaves: int = _in("stem", "background.octaves", 6)
    persistence: float = _in("stem", "background.persistence", 0.5)
    lacunarity: float = _in("stem", "background.lacunarity", 2.0)


class Scan(_Part):
    """Row-wise spline scan noise, knot std ``4 (k g/2 + b + 0.6) − 16`` between g = 0 and g = ``g_max``."""

    k: float = _in("stem", "scan.k")
    b: float = _in("stem", "scan.b")
    knot_spacing_px: float = _in("stem", "scan.knot_spacing_px", KNOT_SPACING_PX,
                                 description="a row of W px has int(W / knot_spacing_px + 1) knots")
    g_max: float = _in("stem", "scan.g_max", SCAN_G_MAX)


class StemPointwise(_Part):
    """Tukey-lambda pointwise noise of shape ``lam`` and scale ``max(k I + b, 0)``."""

    k: float = _in("stem", "pointwise.k")
    b: float = _in("stem", "pointwise.b")
    lam: float = _in("stem", "pointwise.lam")


class Detector(_Part):
    """``quantize``: clip to 0–255 and truncate to 8-bit integers (the published detector read-out)."""

    quantize: bool = True


class Column(_Part):
    sigma: float = _in("hrtem", "column.sigma", description="std of the per-column offset (0–255 units)")


class HrtemPointwise(_Part):
    """Gaussian pointwise noise of σ ``max(k I + b, 0)``."""

    k: float = _in("hrtem", "pointwise.k")
    b: float = _in("hrtem", "pointwise.b")


class Intensity(_Part):
    """How the model's 0–255 scale maps to the image's own units: ``image = offset + scale · model``."""

    scale: float = Field(gt=0.0)
    offset: float = 0.0

    def to_image(self, x: Any) -> Any:
        return self.offset + self.scale * x

    def to_model(self, x: Any) -> Any:
        return (x - self.offset) / self.scale


class _Params(_Part):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True, populate_by_name=True)

    schema_id: Literal["em-noise/noise-params"] = Field(SCHEMA, alias="schema")
    version: Literal[2] = VERSION
    dose_e_per_A2: float | None = Field(None, ge=_COMMON["dose_e_per_A2"][0], le=_COMMON["dose_e_per_A2"][1],
                                        description="Poisson shot noise at this dose (e⁻/Å²); null: none")
    read_sigma: float = Field(0.0, ge=0.0, le=255.0, description="additive Gaussian read noise σ")
    jitter_px: float = Field(0.0, ge=0.0, le=10.0, description="scan-line jitter: std of each row's shift (px)")
    intensity: Intensity | None = None
    pixel_size_A: float | None = Field(None, gt=0.0)
    source: str | None = None
    calibration: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict in the file layout (optional entries that are unset left out)."""
        out = self.model_dump(mode="json", by_alias=True)
        for key in ("intensity", "pixel_size_A", "source", "calibration"):
            if out.get(key) is None:
                out.pop(key, None)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def replace(self, **changes: Any) -> _Params:
        """A validated copy with ``changes`` (dotted keys such as ``"scan.k"`` reach into a group)."""
        data = self.to_dict()
        for key, value in changes.items():
            set_value(data, key, value)
        return parse_params(data)


class StemParams(_Params):
    mode: Literal["haadf", "bf"]
    background: Background = Background()
    scan: Scan
    pointwise: StemPointwise
    detector: Detector = Detector()


class HaadfParams(StemParams):
    """HAADF STEM noise (defaults: the central values of the SFIN paper's draws)."""

    mode: Literal["haadf"] = "haadf"
    scan: Scan = Scan(k=0.0982, b=4.4123)
    pointwise: StemPointwise = StemPointwise(k=0.05, b=6.35, lam=0.04)


class BfParams(StemParams):
    """BF STEM noise; the background darkens (defaults: the central values of the SFIN paper's draws)."""

    mode: Literal["bf"] = "bf"
    scan: Scan = Scan(k=0.04, b=6.2)
    pointwise: StemPointwise = StemPointwise(k=-0.02, b=17.03, lam=0.38)


class HrtemParams(_Params):
    """HRTEM noise: shot noise, detector MTF, column offsets and white Gaussian noise of σ ``max(k I + b, 0)``."""

    mode: Literal["hrtem"] = "hrtem"
    column: Column = Column(sigma=1.5)
    pointwise: HrtemPointwise = HrtemPointwise(k=0.04, b=4.0)
    mtf_sigma_px: float = _in("hrtem", "mtf_sigma_px", 0.5, description="Gaussian detector MTF σ (px)")


NoiseParams = Annotated[HaadfParams | BfParams | HrtemParams, Field(discriminator="mode")]
_ADAPTER: TypeAdapter = TypeAdapter(NoiseParams)
_CLASSES = {"haadf": HaadfParams, "bf": BfParams, "hrtem": HrtemParams}


def default_params(mode: str) -> StemParams | HrtemParams:
    """The central parameter set of ``mode`` (the SFIN paper's means for STEM, the SCGN-like set for HRTEM)."""
    return _CLASSES[check_mode(mode)]()


def check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise EMInputError(None, f"unknown noise mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


# ----------------------------------------------------------------------------------------- dotted keys
def get_value(params: Any, key: str) -> Any:
    """The value at ``key`` (``"group.name"`` or a top-level name such as ``dose_e_per_A2``) of a dict or model."""
    obj = params
    for part in key.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def set_value(data: dict, key: str, value: Any) -> None:
    """Set ``key`` (dotted) in a params dict in place."""
    *groups, name = key.split(".")
    for g in groups:
        data = data.setdefault(g, {})
    data[name] = value


# ---------------------------------------------------------------------------------------------- parsing
def parse_params(data: Any, mode: str | None = None, source: Any = None, *,
                 need_header: bool = False) -> StemParams | HrtemParams:
    """Validated params from a dict (a version-1 dict is upgraded) or a model; EMInputError(source, one line)
    naming the key and its allowed range on any problem, or when the mode is not ``mode``.  A dict without
    ``schema`` and ``version`` is taken as the current version unless ``need_header`` (files)."""
    if isinstance(data, _Params):
        params = data
    else:
        if isinstance(data, dict) and not need_header:
            data = {"schema": SCHEMA, "version": VERSION, **data}
        params = _validate(_upgrade(data, source), source)
    if mode is not None and params.mode != mode:
        raise EMInputError(source, f"noise params are for mode {params.mode!r}, not {mode!r}")
    return params


def _upgrade(data: Any, source: Any) -> Any:
    """A version-1 dict in the version-2 layout: same values (unset options become their defaults)."""
    if not isinstance(data, dict):
        raise EMInputError(source, "noise params must be a JSON object")
    if data.get("version") != 1:
        return data
    new = copy.deepcopy(data)
    new["version"] = VERSION
    for key in ("read_sigma", "jitter_px", "mtf_sigma_px"):
        if key in new and new[key] is None:
            new[key] = 0.0
    scan = new.get("scan")
    if isinstance(scan, dict) and scan.get("knot_spacing_px") == 255.0 / 25.0:
        scan["knot_spacing_px"] = KNOT_SPACING_PX  # v1 wrote the spacing of 26 knots on 256 px; same knots
    return new


def _validate(data: dict, source: Any) -> StemParams | HrtemParams:
    if data.get("schema") != SCHEMA:
        raise EMInputError(source, f"not an em-noise parameter file (expected \"schema\": \"{SCHEMA}\")")
    if data.get("version") != VERSION:
        raise EMInputError(source, f"unsupported parameter file version {data.get('version')!r} (expected 1 or 2)")
    if data.get("mode") not in MODES:
        raise EMInputError(source, f"noise params have no valid 'mode' (got {data.get('mode')!r}; expected one "
                                   f"of {', '.join(MODES)})")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as err:
        raise EMInputError(source, "noise params: " + _describe(err.errors()[0], data["mode"])) from None


def _describe(error: dict, mode: str) -> str:
    """One line for a pydantic error: the dotted key, the value and the allowed range."""
    loc = [str(p) for p in error["loc"]]
    if loc and loc[0] == mode:
        loc = loc[1:]
    key = ".".join(loc) or "(top level)"
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        return f"{key} is missing"
    if kind == "extra_forbidden":
        return f"unknown key {key}"
    bounds = RANGES["hrtem" if mode == "hrtem" else "stem"].get(key)
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than") and bounds is not None:
        return f"{key} = {value!r} is outside the allowed range [{bounds[0]:g}, {bounds[1]:g}]"
    if kind == "finite_number" or kind.endswith("_type") or kind.endswith("_parsing"):
        what = "true or false" if kind.startswith("bool") else "a finite number"
        return f"{key} must be {what}, got {value!r}" + (f" (allowed range [{bounds[0]:g}, {bounds[1]:g}])"
                                                         if bounds else "")
    return f"{key}: {error['msg']}"


# ------------------------------------------------------------------------------------------------- files
def read_params(path: str | os.PathLike, mode: str | None = None) -> StemParams | HrtemParams:
    """Read a params JSON (version 1 or 2); EMInputError naming the file, and the key and range, on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EMInputError(path, "no such file") from None
    except IsADirectoryError:
        raise EMInputError(path, "is a folder, not a noise parameter file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise EMInputError(path, f"cannot read noise parameters ({err.__class__.__name__})") from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except (json.JSONDecodeError, ValueError) as err:
        line = f" (line {err.lineno}: {err.msg})" if isinstance(err, json.JSONDecodeError) else f" ({err})"
        raise EMInputError(path, "not valid JSON" + line) from None
    return parse_params(data, mode=mode, source=path, need_header=True)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def write_params(path: str | os.PathLike, params: Any, *, overwrite: bool = False) -> Path:
    """Write ``params`` (model or dict) as JSON atomically (temp file + rename); an existing file only with
    ``overwrite``."""
    from em_noise.io import write_text  # noqa: PLC0415 (io is heavier than this module needs)

    path = Path(path)
    model = parse_params(params, source=path)
    return write_text(path, model.to_json(), overwrite=overwrite)


def finite_or_none(obj: Any) -> Any:
    """Nested diagnostics as strict JSON: NaN / inf floats become None, numpy scalars plain numbers."""
    if isinstance(obj, dict):
        return {str(k): finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
