"""Turn a ``sfin-train`` checkpoint into bundled weights: a state dict + a JSON model card."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import em_noise
import numpy as np
import torch
from em_noise.errors import EMInputError
from em_noise.training import checkpoint_wall_time_s, evaluate, export_weights, hardware

import sfin
from sfin.data import STEMDataModule
from sfin.model import count_parameters
from sfin.module import SFINModule


def evaluate_tiled(net: torch.nn.Module, dataset, tile_size: int, overlap: int) -> dict[str, float]:
    """Mean PSNR (dB) / SSIM (data range 1) of tiled inference (em_noise.tiling) over (input, target) pairs."""
    from em_noise import metrics
    from em_noise.tiling import predict_tiled

    net = net.eval()
    psnr, ssim = [], []
    for i in range(len(dataset)):
        x, y = dataset[i]
        out = predict_tiled(net, x[0].numpy(), tile_size=tile_size, overlap=overlap)
        psnr.append(metrics.psnr(out, y[0].numpy(), data_range=1.0))
        ssim.append(metrics.ssim(out, y[0].numpy(), data_range=1.0))
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)), "n_images": len(psnr)}


def export_checkpoint(checkpoint: str | Path, output: str | Path, *, config_path: str | Path | None = None,
                      previous_card: str | Path | None = None, device: str | torch.device = "cpu",
                      note: str | None = None, tile_size: int | None = None,
                      overlap: int | None = None) -> dict[str, Any]:
    """Write ``output`` (.pt state dict of the net) and its ``.json`` card; returns the card.

    The card's validation PSNR (dB) / SSIM are measured here, net in eval mode, on the checkpoint's own
    fixed-seed validation set (targets in [0, 1], data range 1), for whole-image inference and for the
    recommended tiling stored in the card (``inference``; default: tiles of the training patch size with a
    quarter-patch overlap, since the Fourier branch is tuned to the field of view it was trained on).
    ``sfin-enhance`` uses the card's tiling unless ``--tile-size`` is given.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise EMInputError(checkpoint, "checkpoint not found")
    try:
        module = SFINModule.load_from_checkpoint(checkpoint, map_location="cpu")
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise EMInputError(checkpoint, f"not a sfin-train checkpoint ({type(exc).__name__}: {exc})") from None
    data_hp = {k: v for k, v in dict(ckpt.get("datamodule_hyper_parameters", {})).items() if not k.startswith("_")}
    dm = STEMDataModule(**data_hp)
    dm.setup("validate")
    val = evaluate(module.net, dm.val_dataloader(), device=device)
    patch = data_hp.get("patch") or data_hp.get("size", 256)
    tile = int(tile_size or patch)
    ov = int(overlap if overlap is not None else tile // 4)
    val_tiled = evaluate_tiled(module.net.cpu(), dm._val, tile, ov)
    steps = int(ckpt.get("global_step", 0))
    wall = checkpoint_wall_time_s(checkpoint) or 0.0
    prev = json.loads(Path(previous_card).read_text()) if previous_card else None
    prev_budget = (prev or {}).get("training", {}).get("cumulative", {"steps": 0, "wall_time_s": 0.0})
    model_hp = {k: v for k, v in dict(module.hparams).items() if not k.startswith("_")}
    card: dict[str, Any] = {
        "name": Path(output).stem,
        "model": "sfin.model.SFIN",
        "model_config": {k: model_hp[k] for k in ("width", "blocks", "layers_per_block", "pos_encoding")},
        "parameters": count_parameters(module.net),
        "published_default": {"width": 64, "blocks": 8, "layers_per_block": 2, "pos_encoding": True},
        "optimizer": {k: model_hp.get(k) for k in ("lr", "milestones", "gamma", "init_from")},
        "data": data_hp,
        "target": data_hp.get("target", "enhance"),
        "training": {
            "steps": steps,
            "wall_time_s": round(wall, 1),
            "samples_seen": steps * int(data_hp.get("batch_size", 0)),
            "cumulative": {"steps": int(prev_budget["steps"]) + steps,
                           "wall_time_s": round(float(prev_budget["wall_time_s"]) + wall, 1)},
            "hardware": hardware(),
            "command": f"sfin-train fit --config {config_path}" if config_path else None,
            "config_yaml": Path(config_path).read_text() if config_path else None,
        },
        "inference": {"tile_size": tile, "overlap": ov,
                      "why": "tiles of the training patch size: the Fourier branch is tuned to the field of view "
                             "it was trained on (compare the two validation figures)"},
        "validation": {"psnr_dB": round(val_tiled["psnr"], 3), "ssim": round(val_tiled["ssim"], 4),
                       "whole_image_psnr_dB": round(val["psnr"], 3), "whole_image_ssim": round(val["ssim"], 4),
                       "n_images": val["n_images"], "size_px": data_hp.get("val_size"), "seed": data_hp.get("val_seed"),
                       "reference": "em-noise enhancement target, data range 1, net in eval mode; psnr_dB/ssim with "
                                    "the recommended tiling ('inference'), whole_image_* with one forward pass"},
        "em_noise_version": em_noise.__version__,
        "sfin_version": sfin.__version__,
        "torch_version": torch.__version__,
        "exported_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source_checkpoint": str(checkpoint),
        "note": note,
    }
    export_weights(module.net, output, card)
    return card
