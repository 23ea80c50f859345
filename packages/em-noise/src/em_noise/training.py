"""Shared Lightning training pieces: a restoration LightningModule base and a DataModule over em_noise.synth.

A package only says how to build its network::

    class MyModule(RestorationModule):
        def __init__(self, width: int = 64, depth: int = 4, lr: float = 2e-4, milestones: list[int] | None = None,
                     gamma: float = 0.5, init_from: str | None = None):  # explicit args: LightningCLI parses them
            super().__init__(lr=lr, milestones=milestones, gamma=gamma, init_from=init_from)

        def build_net(self) -> torch.nn.Module:
            return MyNet(width=self.hparams.width, depth=self.hparams.depth)

``save_hyperparameters`` (called by the base) stores the subclass's init arguments too (also those passed on through
``**kwargs``), so ``MyModule.load_from_checkpoint(path)`` alone rebuilds the net; every checkpoint also records the
net's class and config (``checkpoint['em_noise']``), which :func:`em_noise.weights.load` reads without Lightning.
Both modules take plain typed init arguments, so ``LightningCLI(MyModule, SynthDataModule)`` exposes them as
``--model.*`` / ``--data.*``. This module needs the ``em-noise[train]`` extra (Lightning, jsonargparse); nothing else
in em-noise imports it.

Images are float32 tensors (B, 1, H, W); inputs and targets are in the networks' [0, 1] scale
(see :mod:`em_noise.scaling`), so validation PSNR/SSIM use a data range of 1.
"""
from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from em_noise.errors import EMInputError
from em_noise.io import atomic_write, write_text
from em_noise.weights import (
    Inference,
    IOSpec,
    Validation,
    class_path,
    config_from_hparams,
    cumulative_budget,
    load_state,
    resolve,
    wallclock_state,
)

TRAIN_BLOCK_EPOCHS = 1_000_000  # epochs of fresh samples a training set can serve (indices are lazy)


class DenoiseLocalizeLoss(nn.Module):
    """Two-channel loss: L1 on channel 0 (the restored image) + ``atoms_weight`` × MSE on channel 1 (atom map)."""

    def __init__(self, atoms_weight: float = 4.0):
        super().__init__()
        self.atoms_weight = float(atoms_weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        image = nn.functional.l1_loss(pred[:, :1], target[:, :1])
        return image + self.atoms_weight * nn.functional.mse_loss(pred[:, 1:2], target[:, 1:2])


LOSSES = {"l1": nn.L1Loss, "mse": nn.MSELoss, "l1+mse": DenoiseLocalizeLoss}


class RestorationModule(L.LightningModule):
    """Image-to-image restoration: L1 loss, Adam + MultiStepLR, validation PSNR/SSIM (data range 1) per epoch.

    Args:
        lr: Adam learning rate.
        milestones: optimizer steps at which the learning rate is multiplied by ``gamma``;
            ``None`` -> at 50 % and 75 % of ``trainer.max_steps`` (no decay if max_steps is unset).
        gamma: learning-rate decay factor at each milestone.
        init_from: weights to start a fresh fit from (fine-tuning, or continuing a shipped model): a path to a
            Lightning checkpoint or a ``.pt`` state dict, or a bundled model name of ``WEIGHTS_PACKAGE``. Their
            cumulative training budget is recorded in every checkpoint of the fit (see :func:`em_noise.weights.export`).
            Ignored when the fit resumes from a checkpoint (``--ckpt_path``).
        init_outputs: output channels of the ``init_from`` net that this net's outputs start from, in order
            (e.g. ``[1]``: a one-output atom-map net started from the map channel of a two-output net); default:
            the first ones.
        loss: 'l1' (the papers' loss) or 'mse'. For a sparse target such as an atom map, L1 is minimised by an
            all-zero map (its median), so localization models train with 'mse'; 'l1+mse' is for two-channel
            (image, atom map) targets: L1 on the image plus 4 × MSE on the map.
        compile: run the training steps through ``torch.compile`` (needs a C++ compiler; whether it pays off
            depends on the machine and net, see benchmarks/results/sfin_train_speed.md); validation, export and the
            state dict use the plain net.
    """

    def __init__(
        self,
        lr: float = 2e-4,
        milestones: list[int] | None = None,
        gamma: float = 0.5,
        init_from: str | None = None,
        init_outputs: list[int] | None = None,
        loss: str = "l1",
        compile: bool = False,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        self.save_hyperparameters()  # also collects the subclass's init args
        self.net = self.build_net()
        self.loss_fn = LOSSES[loss]()

    # -- what a subclass provides -------------------------------------------------------------
    def build_net(self) -> nn.Module:
        """Return the network, built from ``self.hparams`` (subclasses override)."""
        raise NotImplementedError("subclasses of RestorationModule must implement build_net()")

    # -- forward / steps ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def train_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The net's forward pass of a training step: compiled once with ``compile``, else ``self(x)``."""
        if not self.hparams.get("compile"):
            return self(x)
        fn = self.__dict__.get("_compiled_net")
        if fn is None:  # kept out of the module tree: the state dict stays the plain net's
            fn = self.__dict__["_compiled_net"] = torch.compile(self.net)
        return fn(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss_fn(self.train_forward(x), y)
        self.log("train_loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], prefix: str) -> torch.Tensor:
        from em_noise import metrics  # imported late: the metrics module has no Lightning dependency

        x, y = batch
        pred = self(x)
        loss = self.loss_fn(pred, y)
        p = pred[:, :1].detach().float().cpu().numpy()  # image metrics on channel 0
        t = y[:, :1].detach().float().cpu().numpy()
        psnr = float(np.mean([metrics.psnr(p[i, 0], t[i, 0], data_range=1.0) for i in range(len(p))]))
        ssim = float(np.mean([metrics.ssim(p[i, 0], t[i, 0], data_range=1.0) for i in range(len(p))]))
        n = x.shape[0]
        self.log(f"{prefix}_loss", loss, batch_size=n, sync_dist=True)
        self.log(f"{prefix}_psnr", psnr, prog_bar=True, batch_size=n, sync_dist=True)
        self.log(f"{prefix}_ssim", ssim, prog_bar=True, batch_size=n, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x)

    # -- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self) -> dict:
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        milestones = self.hparams.milestones
        if milestones is None:
            max_steps = getattr(self.trainer, "max_steps", -1) if self._trainer is not None else -1
            milestones = [int(max_steps * 0.5), int(max_steps * 0.75)] if max_steps and max_steps > 0 else []
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=sorted(milestones), gamma=self.hparams.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_callbacks(self) -> list[L.Callback]:
        """Every fit records its cumulative wall time in the checkpoint (see :class:`WallClock`)."""
        return [WallClock()]

    # -- fine-tuning and what a checkpoint records -------------------------------------------
    WEIGHTS_PACKAGE: str | None = None  # package whose bundled model names ``init_from`` accepts

    def net_config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild ``self.net`` (default: its class's ``CONFIG_KEYS`` from the hparams)."""
        return config_from_hparams(type(self.net), dict(self.hparams))

    def on_fit_start(self) -> None:
        ref = self.hparams.get("init_from")
        resuming = self._trainer is not None and getattr(self.trainer, "ckpt_path", None)
        if ref and not resuming:
            self.load_net_weights(ref)

    def load_net_weights(self, ref: str | Path) -> None:
        """Load the net's weights from a checkpoint / state-dict path or a bundled name of ``WEIGHTS_PACKAGE``, and
        remember the cumulative budget behind them (stored in every checkpoint of this fit, read by the export).

        A tensor that differs from the net's only in its first (output-channel) axis — a tail widened from one
        output to two, or narrowed — is copied into the overlapping channels (``init_outputs``: the init net's
        channels to take, in order; default the first ones); the other channels keep their initialisation.
        """
        path = resolve(str(ref), self.WEIGHTS_PACKAGE)
        state = load_state(path)
        own = self.net.state_dict()
        pick = self.hparams.get("init_outputs")
        for key, value in list(state.items()):
            mine = own.get(key)
            if mine is not None and mine.shape != value.shape and mine.shape[1:] == value.shape[1:]:
                sel = list(range(min(mine.shape[0], value.shape[0]))) if pick is None else list(pick)
                if len(sel) > mine.shape[0] or any(not 0 <= c < value.shape[0] for c in sel):
                    raise ValueError(f"init_outputs {sel} do not fit {key}: {value.shape[0]} output channel(s) "
                                     f"in {ref}, {mine.shape[0]} in this net")
                merged = mine.clone()
                merged[:len(sel)] = value[sel]
                state[key] = merged
        self.net.load_state_dict(state)
        self._init_record = {"ref": str(ref), "cumulative": cumulative_budget(path).model_dump()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["em_noise"] = {"net": {"cls": class_path(self.net), "config": self.net_config()},
                                  "init": getattr(self, "_init_record", None)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._init_record = (checkpoint.get("em_noise") or {}).get("init")


class WallClock(L.Callback):
    """Accumulates training wall time (s) across resumes; stored in the checkpoint as ``train_wall_s``, with the
    machine the fit ran on (:func:`hardware`, at the start of the fit) as ``hardware``."""

    def __init__(self) -> None:
        self.train_wall_s = 0.0
        self.hardware: str | None = None
        self._t0: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.hardware = hardware()
        self._t0 = time.perf_counter()

    def _tick(self) -> None:
        if self._t0 is not None:
            now = time.perf_counter()
            self.train_wall_s += now - self._t0
            self._t0 = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        self._tick()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tick()
        self._t0 = None

    def state_dict(self) -> dict:
        self._tick()
        return {"train_wall_s": self.train_wall_s, "hardware": self.hardware}

    def load_state_dict(self, state_dict: dict) -> None:
        self.train_wall_s = float(state_dict.get("train_wall_s", 0.0))


def checkpoint_wall_time_s(path: str | Path) -> float | None:
    """Cumulative training wall time (s) recorded by :class:`WallClock` in a checkpoint, if any."""
    state = wallclock_state(torch.load(Path(path), map_location="cpu", weights_only=False))
    return float(state["train_wall_s"]) if "train_wall_s" in state else None


@torch.no_grad()
def evaluate(net: nn.Module, loader: DataLoader, device: str | torch.device = "cpu") -> dict[str, float]:
    """Mean PSNR (dB) / SSIM of ``net`` over (input, target) batches, data range 1, net in eval mode."""
    from em_noise import metrics

    net = net.to(device).eval()
    psnrs: list[float] = []
    ssims: list[float] = []
    for x, y in loader:
        p = net(x.to(device)).float().cpu().numpy()
        t = y.float().numpy()
        for i in range(len(p)):
            psnrs.append(float(metrics.psnr(p[i, 0], t[i, 0], data_range=1.0)))
            ssims.append(float(metrics.ssim(p[i, 0], t[i, 0], data_range=1.0)))
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "n_images": len(psnrs)}


@torch.no_grad()
def validate(net: nn.Module, dataset: Dataset, io: IOSpec, inference: Inference, *,
             device: str | torch.device = "cpu", tune: Any = None) -> tuple[Validation, dict | None]:
    """Figures of ``net`` on (input, target) pairs in the network scale, run as the card's ``inference`` runs it.

    PSNR (dB) / SSIM (data range 1) of each output channel against its target channel, and of the input against the
    first target. With ``tune(maps, positions) -> dict`` and an atom-map output, also the peak settings it chooses
    from the predicted maps and the true columns (``dataset.sample(i)['positions']``).
    """
    from em_noise import metrics
    from em_noise.restore import make_predictor, tile_batch_size
    from em_noise.tiling import predict_tiled

    predict = make_predictor(net, device)
    scores: dict[str, dict[str, list[float]]] = {o.name: {"psnr_db": [], "ssim": []} for o in io.outputs}
    amap = next((c for c, o in enumerate(io.outputs) if o.scale == "map"), None)
    inputs, maps, truth, side = [], [], [], None
    for i in range(len(dataset)):
        x, y = dataset[i]
        x0 = x[0].numpy()
        side = x0.shape[-1]
        ys = y.numpy().reshape(-1, *x0.shape)
        out = predict_tiled(predict, x0, tile_size=inference.tile_size, overlap=inference.overlap, pad=inference.pad_px,
                            batch_size=tile_batch_size(inference.tile_size)).reshape(-1, *x0.shape)
        for c, o in enumerate(io.outputs):
            scores[o.name]["psnr_db"].append(metrics.psnr(out[c], ys[c], data_range=1.0))
            scores[o.name]["ssim"].append(metrics.ssim(out[c], ys[c], data_range=1.0))
        inputs.append(metrics.psnr(x0, ys[0], data_range=1.0))
        if tune is not None and amap is not None and hasattr(dataset, "sample"):
            maps.append(out[amap])
            truth.append(dataset.sample(i)["positions"])
    val = Validation(
        metrics={k: {m: round(float(np.mean(v)), 4) for m, v in d.items()} for k, d in scores.items()},
        input_psnr_db=round(float(np.mean(inputs)), 3), n_images=len(inputs), size_px=side,
        reference="the run's fixed-seed validation set, network scale, data range 1, net in eval mode, run as the "
                  "card's 'inference' section says")
    detection = None
    if maps:
        detection = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in tune(maps, truth).items()}
        detection["chosen_on"] = "validation set"
    return val, detection


def hardware() -> str:
    """Short description of this machine: GPU name, or CPU model, cores and torch threads."""
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core CPU ({cpu}), torch threads {torch.get_num_threads()}, no GPU"


def export_weights(net: nn.Module, pt_path: str | Path, card: dict[str, Any]) -> tuple[Path, Path]:
    """Write the net's float32 state dict to ``pt_path`` and ``card`` (JSON-able) next to it as ``.json``."""
    pt_path = Path(pt_path)
    pt_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    atomic_write(pt_path, lambda tmp: torch.save(state, tmp), overwrite=True)
    card_path = write_text(pt_path.with_suffix(".json"), json.dumps(card, indent=2) + "\n", overwrite=True)
    return pt_path, card_path


class EpochBlockSampler(Sampler[int]):
    """Yields indices ``[epoch * n, (epoch + 1) * n)`` so every epoch draws fresh synthetic samples.

    Lightning calls :meth:`set_epoch` at the start of each epoch; without it (e.g. behind the DDP sampler
    wrapper) each new iteration advances to the next block. Items are deterministic in (seed, index).
    """

    def __init__(self, n: int) -> None:
        self.n = int(n)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch) % TRAIN_BLOCK_EPOCHS

    def __iter__(self) -> Iterator[int]:
        e = self.epoch
        self.epoch = (e + 1) % TRAIN_BLOCK_EPOCHS
        return iter(range(e * self.n, (e + 1) * self.n))

    def __len__(self) -> int:
        return self.n


class SynthDataModule(L.LightningDataModule):
    """Training/validation pairs synthesised on the fly by :class:`em_noise.synth.PairDataset`.

    Args:
        mode: 'haadf', 'bf' or 'hrtem'.
        target: 'enhance' (STEM enhancement target), 'denoise' (clean image), 'localize' (atom map) or
            'denoise+localize' (both, as two target channels).
        size: side (px) of the synthesised training images; ``patch`` crops are cut from them.
        patch: training patch side (px); ``None`` trains on whole ``size`` images.
        batch_size: training batch size (validation uses ``val_batch_size``).
        epoch_length: training samples per epoch (each epoch draws fresh ones).
        val_length: number of fixed-seed validation images (whole images of side ``val_size``).
        seed: training seed; ``val_seed``: validation seed (disjoint from the training stream).
        noise: path to calibrated noise parameters (JSON from ``em-noise calibrate``) used as the
            base of the per-image noise draw; ``None`` -> the papers' default ranges.
        synth: extra :class:`em_noise.synth.SynthConfig` fields (e.g. pixel-size range, structure mix).
        num_workers: DataLoader workers (0 = synthesise in the training process).
    """

    def __init__(
        self,
        mode: str = "haadf",
        target: str = "enhance",
        size: int = 256,
        patch: int | None = 96,
        batch_size: int = 8,
        epoch_length: int = 800,
        val_length: int = 16,
        val_size: int = 256,
        val_batch_size: int = 4,
        seed: int = 0,
        val_seed: int = 900_000_001,
        noise: str | None = None,
        synth: dict[str, Any] | None = None,
        num_workers: int = 0,
    ):
        super().__init__()
        if mode not in ("haadf", "bf", "hrtem"):
            raise EMInputError(None, f"mode must be 'haadf', 'bf' or 'hrtem', got {mode!r}")
        from em_noise.synth import TARGETS

        if target not in TARGETS:
            raise EMInputError(None, f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        if seed == val_seed:
            raise EMInputError(None, "seed and val_seed must differ (validation must not reuse training samples)")
        self.save_hyperparameters()
        self._train: Dataset | None = None
        self._val: Dataset | None = None

    def noise_params(self) -> dict | None:
        """Calibrated noise parameters from ``self.hparams.noise`` (None when unset)."""
        if not self.hparams.noise:
            return None
        from em_noise.calibrate import load_params

        return load_params(self.hparams.noise)

    def synth_config(self, size: int):
        """The :class:`em_noise.synth.SynthConfig` for images of side ``size`` px."""
        from em_noise.synth import SynthConfig

        extra = dict(self.hparams.synth or {})
        return SynthConfig(mode=self.hparams.mode, size=size, noise=self.noise_params(), **extra)

    def setup(self, stage: str | None = None) -> None:
        from em_noise.synth import PairDataset

        h = self.hparams
        if self._train is None and stage in (None, "fit"):
            self._train = PairDataset(
                self.synth_config(h.size), length=h.epoch_length * TRAIN_BLOCK_EPOCHS,
                seed=h.seed, target=h.target, patch=h.patch,
            )
        if self._val is None and stage in (None, "fit", "validate", "test"):
            self._val = PairDataset(
                self.synth_config(h.val_size), length=h.val_length, seed=h.val_seed, target=h.target, patch=None,
            )

    def val_dataset(self) -> Dataset:
        """The fixed-seed validation set (after ``setup``)."""
        if self._val is None:
            self.setup("validate")
        return self._val

    def train_dataloader(self) -> DataLoader:
        h = self.hparams
        return DataLoader(
            self._train, batch_size=h.batch_size, sampler=EpochBlockSampler(h.epoch_length),
            num_workers=h.num_workers, drop_last=True, persistent_workers=False,
        )

    def val_dataloader(self) -> DataLoader:
        h = self.hparams
        return DataLoader(self._val, batch_size=h.val_batch_size, shuffle=False, num_workers=h.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
