"""Load SFIN weights by bundled name ('haadf', 'bf') or by path (Lightning checkpoint or state dict)."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from em_noise.errors import EMInputError
from em_noise.training import load_net_state

from sfin.model import SFIN

BUNDLED = ("haadf", "bf")


def bundled_dir() -> Path:
    """Folder holding the bundled ``<name>.pt`` state dicts and ``<name>.json`` cards."""
    return Path(str(resources.files("sfin") / "weights"))


def resolve(ref: str | Path) -> Path:
    """A bundled name -> its ``.pt`` file; anything else is taken as a path."""
    if str(ref) in BUNDLED:
        path = bundled_dir() / f"{ref}.pt"
        if not path.is_file():
            raise EMInputError(path, f"bundled model {ref!r} is missing from this installation")
        return path
    path = Path(ref)
    if not path.is_file():
        raise EMInputError(path, f"no such weights file (bundled models: {', '.join(BUNDLED)})")
    return path


def card(ref: str | Path) -> dict[str, Any]:
    """The JSON card next to a weights file (``<name>.json``), or an empty dict."""
    path = resolve(ref).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else {}


def recommended_tiling(ref: str | Path, default: tuple[int, int] = (512, 64)) -> tuple[int, int]:
    """(tile_size, overlap) px recommended by the weights' card (``inference``), else ``default``."""
    inf = card(ref).get("inference") or {}
    if "tile_size" in inf and "overlap" in inf:
        return int(inf["tile_size"]), int(inf["overlap"])
    return default


def config_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Recover :class:`SFIN` init args from the shapes of a state dict."""
    try:
        width = int(state["head.weight"].shape[0])
        blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("body."))
        layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("body.0.layers."))
        fu = state["body.0.layers.0.spectral.fourier.conv.weight"]
    except (KeyError, ValueError, IndexError):
        raise ValueError("not an SFIN state dict") from None
    pos_encoding = int(fu.shape[1]) == int(fu.shape[0]) + 2
    return {"width": width, "blocks": blocks, "layers_per_block": layers, "pos_encoding": pos_encoding}


def load_model(ref: str | Path = "haadf", device: str | torch.device = "cpu") -> SFIN:
    """SFIN in eval mode with weights from a bundled name, a Lightning checkpoint or a state dict."""
    path = resolve(ref)
    state = load_net_state(path)
    try:
        net = SFIN(**config_from_state(state))
        net.load_state_dict(state)
    except (ValueError, RuntimeError) as exc:
        raise EMInputError(path, f"not SFIN weights: {str(exc).splitlines()[0]}") from None
    return net.to(device).eval()
