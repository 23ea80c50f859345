"""Python API: SCGN denoising and atom-column localization of numpy arrays (or hyperspy ``Signal2D``), exactly as
``scgn-denoise`` runs them.

A two-output model gives the denoised frame (channel 0, the input's units) and the atom-column map (channel 1,
[0, 1]) in one pass; a one-output denoiser takes the map from a second network (``atoms_model``, bundled:
``hrtem-atoms``). ``MAP_FROM`` names bundled two-output models whose maps come from another bundled network
instead: the bundled ``hrtem``'s own map finds more columns on noisy tuning frames than ``hrtem-atoms``, but on a
noise-free resolvable lattice it misses many columns, so its maps come from ``hrtem-atoms``
(benchmarks/results/scgn_detection.md).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from em_noise import weights
from em_noise.errors import EMInputError
from em_noise.restore import Runner, unwrap

from scgn import localize

PACKAGE = "scgn"
NET = "scgn.model.SCGN"
ATOMS_MODEL = "hrtem-atoms"
MAP_FROM = {"hrtem": ATOMS_MODEL}  # bundled two-output models whose atom maps come from another bundled network


def load_model(model: str = "hrtem", device: str | torch.device = "cpu") -> tuple[torch.nn.Module, weights.ModelCard]:
    """SCGN (eval mode) and its card from a bundled name ('hrtem'), a ``.pt`` + card or a checkpoint."""
    return weights.load(model, PACKAGE, default_net=NET, device=device)


def image_output(card: weights.ModelCard) -> str:
    """Name of the restored-image output of a model (its first output on the input's scale)."""
    return next((o.name for o in card.io.outputs if o.scale == "input"), card.io.outputs[0].name)


def prepare(model: str = "hrtem", *, atoms: bool = False, contrast: str = localize.DEFAULT_CONTRAST,
            atoms_model: str | None = None, device: str | torch.device = "cpu", tile_size: int | None = None,
            overlap: int | None = None) -> tuple[Runner, Runner | None]:
    """The denoiser and, when ``atoms`` needs a map that the denoiser does not give, the atom-map network."""
    if contrast not in localize.CONTRASTS:
        raise EMInputError(None, f"contrast must be one of {', '.join(localize.CONTRASTS)}, got {contrast!r}")
    runner = Runner(*load_model(model, device), device=device, tile_size=tile_size, overlap=overlap)
    runner.check_mode("hrtem")
    if not atoms or contrast not in ("auto", "model"):
        return runner, None
    if runner.card.output_index("atom_map") is not None:
        if model not in MAP_FROM or atoms_model is not None:
            return runner, None
        atoms_model = MAP_FROM[model]
    amap = Runner(*load_model(atoms_model or ATOMS_MODEL, device), device=device, tile_size=tile_size,
                  overlap=overlap)
    if amap.card.output_index("atom_map") is None:
        raise EMInputError(None, f"model {amap.card.name!r} has no atom-map output (--atoms-model)")
    return runner, amap


def process(runner: Runner, amap: Runner | None, data: np.ndarray, *, atoms: bool = False,
            contrast: str = localize.DEFAULT_CONTRAST, pixel_size_A: float | None = None,
            min_distance_px: float | None = None, threshold: float | None = None, progress: bool = False,
            desc: str = "frames") -> tuple[np.ndarray, localize.AtomTable | None]:
    """Denoised frame(s) in the input's units and, with ``atoms``, the column table of every frame."""
    outs = runner.run(data, mode="hrtem", progress=progress, desc=desc)
    denoised = outs[image_output(runner.card)]
    if not atoms:
        return denoised, None
    maps, detection = outs.get("atom_map"), runner.card.detection
    if amap is not None:
        maps, detection = amap.run(data, mode="hrtem", progress=progress, desc=desc)["atom_map"], amap.card.detection
    table = localize.locate_columns(data, denoised, maps, contrast=contrast, pixel_size_A=pixel_size_A,
                                    min_distance_px=min_distance_px, threshold=threshold, map_detection=detection,
                                    progress=progress, desc=f"{desc} atoms")
    return denoised, table


def denoise(image: Any, *, model: str = "hrtem", tile_size: int | None = None, overlap: int | None = None,
            device: str | torch.device = "cpu", progress: bool = False) -> Any:
    """Denoise an HRTEM frame (Y, X) or movie (N, Y, X); float32 in the input's units (a Signal2D for one)."""
    data, _, rewrap = unwrap(image)
    runner, _ = prepare(model, device=device, tile_size=tile_size, overlap=overlap)
    return rewrap(process(runner, None, data, progress=progress)[0])


def locate_atoms(image: Any, *, model: str = "hrtem", pixel_size_A: float | None = None,
                 contrast: str = localize.DEFAULT_CONTRAST, atoms_model: str | None = None,
                 min_distance_px: float | None = None, threshold: float | None = None, tile_size: int | None = None,
                 overlap: int | None = None, device: str | torch.device = "cpu",
                 progress: bool = False) -> localize.AtomTable:
    """Atom columns of every frame with a confidence each (see :mod:`scgn.localize`), as ``scgn-denoise --atoms``.

    ``pixel_size_A`` (or a Signal2D's axes) fills the table's Å columns.
    """
    data, pixel_size_A, _ = unwrap(image, pixel_size_A)
    runner, amap = prepare(model, atoms=True, contrast=contrast, atoms_model=atoms_model, device=device,
                           tile_size=tile_size, overlap=overlap)
    return process(runner, amap, data, atoms=True, contrast=contrast, pixel_size_A=pixel_size_A,
                   min_distance_px=min_distance_px, threshold=threshold, progress=progress)[1]
