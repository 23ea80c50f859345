"""Bundled SCGN weights and loading a network by name or path.

A weights reference is either a bundled name (``hrtem``: denoiser, ``hrtem-atoms``: atom-map localizer), a
``.pt`` state dict with its ``.json`` card beside it (the card's ``config.model`` holds the architecture), or a
Lightning checkpoint written by ``scgn-train`` (its hyper-parameters hold the architecture).
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from em_noise.errors import EMInputError
from em_noise.training import checkpoint_hparams, load_net_state

from scgn.model import SCGN, SCGNConfig

BUNDLED = ("hrtem", "hrtem-atoms")
_ARCH_KEYS = tuple(SCGNConfig.model_fields)


def weights_dir() -> Path:
    """Folder of the bundled weights inside the installed package."""
    return Path(str(resources.files("scgn") / "weights"))


def resolve_weights(ref: str | Path) -> Path:
    """Bundled name or file path -> existing weights file (EMInputError otherwise)."""
    ref = str(ref)
    if ref in BUNDLED:
        path = weights_dir() / f"{ref}.pt"
        if not path.is_file():
            raise EMInputError(path, f"bundled weights {ref!r} are not installed with this scgn package")
        return path
    path = Path(ref).expanduser()
    if not path.is_file():
        raise EMInputError(path, f"no such weights file (bundled names: {', '.join(BUNDLED)})")
    return path


def read_card(path: str | Path) -> dict[str, Any]:
    """The JSON card beside a ``.pt`` weights file ({} when absent)."""
    card = Path(path).with_suffix(".json")
    if not card.is_file():
        return {}
    try:
        return json.loads(card.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EMInputError(card, f"unreadable weights card ({type(exc).__name__})") from None


def architecture(path: Path) -> tuple[SCGNConfig, dict[str, Any]]:
    """Architecture and card/hyper-parameters of a weights file (card for .pt, hparams for checkpoints)."""
    if path.suffix == ".ckpt":
        info = checkpoint_hparams(path)
        arch = {k: info[k] for k in _ARCH_KEYS if k in info}
        obj = torch.load(path, map_location="cpu", weights_only=False)
        info["datamodule_hyper_parameters"] = dict(obj.get("datamodule_hyper_parameters") or {})
    else:
        info = read_card(path)
        arch = dict(info.get("config", {}).get("model", {}) or {})
        arch = {k: arch[k] for k in _ARCH_KEYS if k in arch}
    try:
        return SCGNConfig(**arch), info
    except ValueError as exc:
        raise EMInputError(path, f"invalid SCGN architecture in weights metadata: {exc}") from None


def load_model(ref: str | Path = "hrtem", device: str | torch.device = "cpu") -> tuple[SCGN, dict[str, Any]]:
    """Network (eval mode, on ``device``) and its card / hyper-parameters from a bundled name or a path."""
    path = resolve_weights(ref)
    cfg, info = architecture(path)
    net = SCGN(cfg)
    state = load_net_state(path)
    try:
        net.load_state_dict(state)
    except RuntimeError:
        raise EMInputError(path, "weights do not match the SCGN architecture recorded with them") from None
    return net.to(device).eval(), info


def inference_tiling(info: dict[str, Any]) -> tuple[int, int]:
    """(tile size, overlap) px a model is meant to run at: its card's ``inference`` entry, for a checkpoint its
    training patch, else (512, 64)."""
    inf = info.get("inference") or {}
    if "tile_size" in inf:
        return int(inf["tile_size"]), int(inf.get("tile_overlap", int(inf["tile_size"]) // 4))
    patch = (info.get("datamodule_hyper_parameters") or {}).get("patch")
    return (int(patch), int(patch) // 4) if patch else (512, 64)
