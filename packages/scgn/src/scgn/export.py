"""Export a training checkpoint as package weights: ``<name>.pt`` state dict + ``<name>.json`` card."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np
import torch
from em_noise.errors import EMInputError
from em_noise.training import checkpoint_wall_time_s, export_weights, hardware

from scgn.data import HRTEMDataModule
from scgn.model import SCGN, count_parameters
from scgn.weights import BUNDLED, weights_dir

_DATA_KEYS = ("target", "size", "patch", "batch_size", "epoch_length", "val_length", "val_size", "val_batch_size",
              "seed", "val_seed", "noise", "synth", "num_workers")


def export_checkpoint(ckpt: str | Path, name: str, *, out_dir: str | Path | None = None, config_file: str | None = None,
                      previous_budget_s: float = 0.0, notes: str = "") -> tuple[Path, Path, dict[str, Any]]:
    """Write ``<out_dir>/<name>.pt`` + ``.json`` from a scgn-train checkpoint; validation re-run on its fixed set.

    ``out_dir`` defaults to the package's bundled-weights folder (``name`` must then be a bundled name).
    """
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise EMInputError(ckpt, "checkpoint not found")
    if out_dir is None and name not in BUNDLED:
        raise EMInputError(None, f"bundled names are {', '.join(BUNDLED)}; give an output folder for others")
    try:
        obj = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as exc:  # not a torch file
        raise EMInputError(ckpt, f"not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise EMInputError(ckpt, "not a Lightning checkpoint")
    hp = dict(obj.get("hyper_parameters", {}))
    dp = dict(obj.get("datamodule_hyper_parameters", {}))
    if "width" not in hp:
        raise EMInputError(ckpt, "not an scgn-train checkpoint (no SCGN hyper-parameters)")
    net = SCGN(width=hp["width"], n_blocks=hp["n_blocks"], std_window=hp.get("std_window", 3),
               attention_ratio=hp.get("attention_ratio", 16))
    net.load_state_dict({k[4:]: v for k, v in obj["state_dict"].items() if k.startswith("net.")})
    dm = HRTEMDataModule(**{k: dp[k] for k in _DATA_KEYS if k in dp})
    patch = dp.get("patch") or dp.get("size") or 512
    tiling = {"tile_size": int(patch), "tile_overlap": int(patch) // 4}
    val, amaps, true_xy = _validate(net, dm, tiling)
    detection = None
    if dp.get("target") == "localize":
        from scgn.localize import tune_detection

        best = tune_detection(amaps, true_xy)
        detection = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in best.items()}
        detection["chosen_on"] = "validation set"
    wall = checkpoint_wall_time_s(ckpt) or 0.0
    card = {
        "name": name,
        "network": "SCGN",
        "task": {"denoise": "HRTEM denoising (clean-image target, input scale)",
                 "localize": "HRTEM atom-column map (σ≈1 px spots in [0, 1])"}.get(dp.get("target", ""), dp.get("target")),
        "parameters": count_parameters(net),
        "config": {
            "file": config_file,
            "model": {k: hp[k] for k in ("width", "n_blocks", "std_window", "attention_ratio") if k in hp},
            "optim": {k: hp.get(k) for k in ("loss", "lr", "milestones", "gamma", "init_from")},
            "data": {k: dp.get(k) for k in _DATA_KEYS if k in dp} | {"mode": "hrtem"},
        },
        "steps": int(obj.get("global_step", 0)),
        "epochs": int(obj.get("epoch", 0)),
        "wall_time_s": round(wall, 1),
        "cumulative_budget_s": round(previous_budget_s + wall, 1),
        "hardware": hardware(),
        "inference": tiling | {"why": "the Fourier branch is applied at the training patch size; whole larger "
                                        "images shift its spectrum statistics"},
        "validation": val | {"n_images": dp.get("val_length"), "size_px": dp.get("val_size"),
                             "seed": dp.get("val_seed"), "data_range": 1.0},
        "detection": detection,
        "versions": {"em_noise": _version("em_noise"), "scgn": _version("scgn"), "torch": torch.__version__},
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source_checkpoint": ckpt.name,
        "notes": notes,
    }
    folder = Path(out_dir) if out_dir is not None else weights_dir()
    pt, js = export_weights(net, folder / f"{name}.pt", card)
    return pt, js, card


def _validate(net: SCGN, dm: HRTEMDataModule, tiling: dict) -> tuple[dict, list, list]:
    """Mean PSNR/SSIM on the fixed validation set, tiled as at inference and on whole images; also the
    (tiled) outputs and the true column positions, for tuning the atom detection of a localize model."""
    from em_noise import metrics
    from em_noise.synth import PairDataset
    from em_noise.tiling import predict_tiled

    h = dm.hparams
    ds = PairDataset(dm.synth_config(h.val_size), length=h.val_length, seed=h.val_seed, target=h.target)
    net = net.eval()
    fn = lambda t: net(t)  # noqa: E731
    rows, outs, true_xy = [], [], []
    with torch.no_grad():
        for i in range(len(ds)):
            x, y = ds[i]
            xn, yn = x[0].numpy(), y[0].numpy()
            tiled = predict_tiled(fn, xn, tile_size=tiling["tile_size"], overlap=tiling["tile_overlap"])
            whole = net(x[None])[0, 0].numpy()
            rows.append((metrics.psnr(tiled, yn, data_range=1.0), metrics.ssim(tiled, yn, data_range=1.0),
                         metrics.psnr(whole, yn, data_range=1.0), metrics.psnr(xn, yn, data_range=1.0)))
            outs.append(tiled)
            if h.target == "localize":
                true_xy.append(ds.sample(i)["positions"])
    r = np.mean(np.array(rows, dtype=np.float64), axis=0)
    val = {"psnr_db": round(float(r[0]), 3), "ssim": round(float(r[1]), 4),
           "psnr_whole_image_db": round(float(r[2]), 3), "input_psnr_db": round(float(r[3]), 3)}
    return val, outs, true_xy


def _version(mod: str) -> str:
    try:
        return __import__(mod).__version__
    except Exception:  # pragma: no cover - version is informative only
        return "unknown"
