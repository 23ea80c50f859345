"""Shipping trained networks: one model card, resolving a model by name or path, loading, exporting.

A model is a ``<name>.pt`` state dict with its ``<name>.json`` card beside it; a package's bundled models live in
``<package>/weights/``. A Lightning checkpoint written by ``*-train fit`` loads too (its card is built from what the
checkpoint records). Loading never imports the training stack (Lightning); :func:`export` is the one training-side
function and takes the training DataModule class from its caller.

Intensity conventions of the outputs (``card.io.outputs[i].scale``):

* ``input``: the input frame's [0, 1] network scale (0.1 / 99.9 percentiles -> 0 / 1), mapped back to input units;
* ``target``: the absolute enhancement target in [0, 1] (HAADF background 0, brightest column 1; BF the inverse),
  shown on the 0–255 paper scale;
* ``map``: a [0, 1] map (atom-column spots).
"""
from __future__ import annotations

import importlib
import json
import os
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from em_noise.errors import EMInputError

CARD_FORMAT = 2
WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt")
DEFAULT_TILE_PX = 512  # frames up to this size run whole; larger ones in blended tiles of this size (on a CPU,
#                       convolutions over 1024² maps run several times slower per pixel than over 512² ones)
DEFAULT_OVERLAP_PX = 128
TARGET_OUTPUTS = {  # em_noise.synth training targets -> network output channels
    "enhance": (("enhanced", "target"),),
    "denoise": (("denoised", "input"),),
    "localize": (("atom_map", "map"),),
    "denoise+localize": (("denoised", "input"), ("atom_map", "map")),
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Architecture(_Model):
    """Network class (dotted path) and the keyword arguments that build it."""

    cls: str
    config: dict[str, Any] = Field(default_factory=dict)


class Output(_Model):
    """One output channel of the network: its name and intensity scale (see the module docstring)."""

    name: str
    scale: Literal["input", "target", "map"]


class IOSpec(_Model):
    """Which frames the network takes and what it returns."""

    modes: list[str] = Field(description="imaging modes it serves, e.g. ['haadf', 'bf'] or ['hrtem']")
    invert: list[str] = Field(default_factory=list, description="modes whose frames are inverted (v -> 1 - v in the "
                              "[0, 1] network scale) before the network and its image outputs after it")
    outputs: list[Output]


class Budget(_Model):
    steps: int = 0
    wall_time_s: float = 0.0

    def __add__(self, other: Budget) -> Budget:
        return Budget(steps=self.steps + other.steps, wall_time_s=round(self.wall_time_s + other.wall_time_s, 1))


class Training(_Model):
    """How the weights were made: this run's recipe and budget, and the cumulative budget of all runs behind them."""

    recipe: dict[str, Any] = Field(default_factory=dict, description="model and data hyper-parameters of the run")
    config: str | None = Field(None, description="training config (packaged name or path)")
    config_yaml: str | None = None
    run: Budget = Field(default_factory=Budget)
    cumulative: Budget = Field(default_factory=Budget, description="this run plus every run it continued")
    init_from: str | None = None
    hardware: str | None = None
    source_checkpoint: str | None = None


class Inference(_Model):
    """How to run the network: frames up to ``tile_size`` px per side whole, larger ones in blended tiles."""

    tile_size: int = Field(DEFAULT_TILE_PX, ge=8)
    overlap: int = Field(DEFAULT_OVERLAP_PX, ge=0)
    pad_px: int = Field(0, ge=0, description="mirrored border (px) added to each frame before the network and "
                                             "cropped after (em_noise.tiling.predict_tiled)")
    why: str = ("whole frames up to the tile size; larger ones in blended tiles, which bound memory and run faster per "
                "pixel on a CPU than larger ones")


class Validation(_Model):
    """Figures on the run's fixed-seed validation set (network scale, data range 1, net in eval mode)."""

    metrics: dict[str, dict[str, float]] = Field(default_factory=dict, description="output -> {psnr_db, ssim}")
    input_psnr_db: float | None = None
    n_images: int | None = None
    size_px: int | None = None
    seed: int | None = None
    reference: str = ""


class ModelCard(_Model):
    """Everything shipped with a set of weights (stored as ``<name>.json`` beside ``<name>.pt``)."""

    format: int = CARD_FORMAT
    name: str
    architecture: Architecture
    parameters: int
    task: str = ""
    io: IOSpec
    field_of_view_px: int | None = Field(None, description="side of the frames or crops it was trained on (px)")
    training: Training = Field(default_factory=Training)
    inference: Inference = Field(default_factory=Inference)
    validation: Validation = Field(default_factory=Validation)
    detection: dict[str, Any] | None = Field(None, description="peak settings of the atom map "
                                              "('chosen_on': validation set or tuning frames)")
    versions: dict[str, str] = Field(default_factory=dict)
    created_utc: str | None = None
    notes: str = ""

    def output_index(self, name: str) -> int | None:
        """Channel of the output called ``name`` (None when the network has no such output)."""
        return next((i for i, o in enumerate(self.io.outputs) if o.name == name), None)


def io_for(mode: str | None, target: str | None) -> IOSpec:
    """IOSpec of a network trained on em-noise data of ``mode`` ('haadf', 'bf', 'stem', 'hrtem') and ``target``."""
    outputs = [Output(name=n, scale=s) for n, s in TARGET_OUTPUTS.get(target or "", (("output", "input"),))]
    if mode == "stem":  # one network for both detectors, BF at HAADF polarity
        return IOSpec(modes=["haadf", "bf"], invert=["bf"], outputs=outputs)
    return IOSpec(modes=[mode] if mode else [], outputs=outputs)


# ----------------------------------------------------------------------------------------------- names and files


def bundled_dir(package: str) -> Path:
    """Folder of a package's bundled ``<name>.pt`` + ``<name>.json`` models."""
    return Path(str(resources.files(package) / "weights"))


def bundled_names(package: str) -> list[str]:
    """Names of the models bundled with ``package``."""
    folder = bundled_dir(package)
    return sorted(p.stem for p in folder.glob("*.pt")) if folder.is_dir() else []


def resolve(name_or_path: str | os.PathLike, package: str | None = None) -> Path:
    """A bundled model name of ``package`` or a path -> the existing weights file (EMInputError otherwise)."""
    ref = str(name_or_path)
    if package and Path(ref).suffix not in WEIGHT_SUFFIXES and "/" not in ref:
        path = bundled_dir(package) / f"{ref}.pt"
        if path.is_file():
            return path
    path = Path(ref).expanduser()
    if not path.is_file():
        known = f" (bundled {package} models: {', '.join(bundled_names(package)) or 'none'})" if package else ""
        raise EMInputError(path, f"no such weights file or bundled model{known}")
    return path


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt, not a torch file, or a checkpoint holding Python objects
        if path.suffix == ".ckpt":
            try:
                return torch.load(path, map_location="cpu", weights_only=False)
            except Exception:  # noqa: BLE001
                pass
        raise EMInputError(path, f"not a readable torch checkpoint or state dict ({type(exc).__name__})") from None


def net_state(obj: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network state dict inside a loaded ``.pt`` state dict or Lightning checkpoint (``net.`` prefix stripped)."""
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = {k[len("net."):]: v for k, v in obj["state_dict"].items() if k.startswith("net.")}
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EMInputError(path, "does not contain a network state dict")
    return obj


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a network state dict from a ``.pt`` file or a Lightning checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise EMInputError(path, "weights file not found")
    return net_state(_torch_load(path), path)


def import_object(dotted: str) -> Any:
    """``'pkg.module.Name'`` -> the object (EMInputError when it does not exist)."""
    module, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        raise EMInputError(None, f"unknown network class {dotted!r}") from None


def class_path(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def config_from_hparams(net_cls: type, hparams: dict[str, Any]) -> dict[str, Any]:
    """The network's keyword arguments among a training module's hyper-parameters (``net_cls.CONFIG_KEYS``)."""
    return {k: hparams[k] for k in getattr(net_cls, "CONFIG_KEYS", ()) if k in hparams}


# ----------------------------------------------------------------------------------------------- cards


def read_card(path: str | os.PathLike) -> ModelCard | None:
    """The card beside a ``.pt`` file (cards of the first format are converted), or None when there is none."""
    path = Path(path).with_suffix(".json")
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return ModelCard.model_validate(raw if raw.get("format") == CARD_FORMAT else legacy_card(raw, path.parent))
    except (OSError, ValueError, AttributeError) as exc:
        reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else type(exc).__name__
        raise EMInputError(path, f"unreadable model card ({reason})") from None


def legacy_card(old: dict[str, Any], folder: Path | None = None) -> dict[str, Any]:
    """Convert a card of the first format (sfin's ``model_config`` dialect or scgn's ``config.model`` one) to a
    current card's fields; ``folder`` holds the cards of the models it names as ``init_from``."""
    if "model_config" in old or str(old.get("model", "")).startswith("sfin."):
        f = _legacy_sfin(old)
    else:
        f = _legacy_scgn(old, folder)
    data, val, (tile, overlap) = f["data"], f["validation"], f["tiling"]
    return {
        "format": CARD_FORMAT, "name": old.get("name", "model"), "architecture": f["architecture"],
        "parameters": int(old.get("parameters", 0)), "task": str(old.get("task", "")),
        "io": io_for(data.get("mode"), data.get("target")).model_dump(),
        "field_of_view_px": data.get("patch") or data.get("size"),
        "training": {"recipe": {"model": f["architecture"]["config"] | f["optim"], "data": data},
                     "config": f["config"], "config_yaml": (old.get("training") or {}).get("config_yaml"),
                     "run": f["run"].model_dump(), "cumulative": f["cumulative"].model_dump(),
                     "init_from": f["optim"].get("init_from"), "source_checkpoint": old.get("source_checkpoint"),
                     "hardware": (old.get("training") or {}).get("hardware") or old.get("hardware")},
        "inference": {"tile_size": int(tile), "overlap": int(overlap if overlap is not None else tile // 4),
                      "why": f["why"]} if tile else {},
        "validation": {"metrics": {k: {m: float(v) for m, v in d.items() if v is not None}
                                   for k, d in f["metrics"].items() if any(v is not None for v in d.values())},
                       "input_psnr_db": val.get("input_psnr_db"), "n_images": val.get("n_images"),
                       "size_px": val.get("size_px"), "seed": val.get("seed"), "reference": val.get("reference", "")},
        "detection": old.get("detection"), "versions": {k: str(v) for k, v in f["versions"].items()},
        "created_utc": f["created"], "notes": f["notes"] or "",
    }


def _legacy_sfin(old: dict[str, Any]) -> dict[str, Any]:
    tr, val, inf = dict(old.get("training") or {}), old.get("validation") or {}, old.get("inference") or {}
    run = Budget(steps=tr.get("steps", 0), wall_time_s=tr.get("wall_time_s", 0.0))
    return {
        "architecture": {"cls": old.get("model", "sfin.model.SFIN"), "config": old.get("model_config") or {}},
        "data": {"target": old.get("target"), **(old.get("data") or {})}, "optim": dict(old.get("optimizer") or {}),
        "run": run, "cumulative": Budget(**tr["cumulative"]) if tr.get("cumulative") else run,
        "metrics": {"enhanced": {"psnr_db": val.get("psnr_dB"), "ssim": val.get("ssim")},
                    "enhanced_whole_frame": {"psnr_db": val.get("whole_image_psnr_dB"),
                                             "ssim": val.get("whole_image_ssim")}},
        "validation": val, "tiling": (inf.get("tile_size"), inf.get("overlap")), "why": inf.get("why", ""),
        "versions": {k[:-len("_version")]: v for k, v in old.items() if k.endswith("_version")},
        "config": tr.get("command"), "created": old.get("exported_utc"), "notes": old.get("note"),
    }


def _legacy_scgn(old: dict[str, Any], folder: Path | None) -> dict[str, Any]:
    cfg, val, inf = dict(old.get("config") or {}), old.get("validation") or {}, old.get("inference") or {}
    data, optim = {"mode": "hrtem", **(cfg.get("data") or {})}, dict(cfg.get("optim") or {})
    net = old.get("network", "SCGN")
    run = Budget(steps=old.get("steps", 0), wall_time_s=old.get("wall_time_s", 0.0))
    prior, parent = Budget(), optim.get("init_from")  # a continued model: its parent's card is beside it
    if parent and folder is not None and (folder / f"{parent}.json").is_file():
        parent_card = legacy_card(json.loads((folder / f"{parent}.json").read_text()), folder)
        prior = Budget(**parent_card["training"]["cumulative"])
    output = TARGET_OUTPUTS.get(data.get("target", "denoise"), (("output", "input"),))[0][0]
    return {
        "architecture": {"cls": net if "." in net else f"scgn.model.{net}", "config": cfg.get("model") or {}},
        "data": data, "optim": optim, "run": run,
        "cumulative": Budget(steps=prior.steps + run.steps,
                             wall_time_s=old.get("cumulative_budget_s", prior.wall_time_s + run.wall_time_s)),
        "metrics": {output: {"psnr_db": val.get("psnr_db"), "ssim": val.get("ssim")},
                    f"{output}_whole_frame": {"psnr_db": val.get("psnr_whole_image_db")}},
        "validation": val, "tiling": (inf.get("tile_size"), inf.get("tile_overlap")), "why": inf.get("why", ""),
        "versions": old.get("versions") or {}, "config": cfg.get("file"), "created": old.get("created_utc"),
        "notes": old.get("notes"),
    }


def wallclock_state(obj: dict[str, Any]) -> dict[str, Any]:
    """What em_noise.training.WallClock stored in a loaded Lightning checkpoint (``train_wall_s``, ``hardware``);
    empty when it holds none."""
    for key, state in (obj.get("callbacks") or {}).items():
        if "WallClock" in str(key) and isinstance(state, dict):
            return state
    return {}


def checkpoint_budget(obj: dict[str, Any]) -> tuple[Budget, Budget]:
    """(this run, budget carried in from the weights it started from) recorded in a Lightning checkpoint."""
    wall = float(wallclock_state(obj).get("train_wall_s", 0.0))
    prior = ((obj.get("em_noise") or {}).get("init") or {}).get("cumulative")
    return Budget(steps=int(obj.get("global_step", 0)), wall_time_s=round(wall, 1)), Budget(**(prior or {}))


def cumulative_budget(name_or_path: str | os.PathLike, package: str | None = None) -> Budget:
    """Cumulative training budget behind a set of weights (its card, or what a checkpoint records)."""
    path = resolve(name_or_path, package)
    if path.suffix == ".ckpt":
        run, prior = checkpoint_budget(_torch_load(path))
        return prior + run
    card = read_card(path)
    return card.training.cumulative if card is not None else Budget()


def _canonical(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _budget_before(run: Training, init: str, package: str | None) -> Budget:
    """Budget of ``init`` for a checkpoint that did not record it: its card's cumulative budget, or, when that card
    is an export of this same run (same recipe and ``init_from``; e.g. a second name exported from one checkpoint),
    the budget that card had carried in."""
    path = resolve(init, package)
    card = read_card(path) if path.suffix != ".ckpt" else None
    if card is None:
        return cumulative_budget(path)
    t = card.training
    same_run = (_canonical(t.recipe) == _canonical(run.recipe) and t.init_from == run.init_from
                and t.run.steps <= run.run.steps)
    if same_run:
        return Budget(steps=t.cumulative.steps - t.run.steps,
                      wall_time_s=round(t.cumulative.wall_time_s - t.run.wall_time_s, 1))
    return t.cumulative


def _checkpoint_card(obj: dict[str, Any], path: Path, default_net: str | None) -> ModelCard:
    hp = {k: v for k, v in (obj.get("hyper_parameters") or {}).items() if not str(k).startswith("_")}
    dp = {k: v for k, v in (obj.get("datamodule_hyper_parameters") or {}).items() if not str(k).startswith("_")}
    spec = (obj.get("em_noise") or {}).get("net")
    if spec is None:
        if default_net is None:
            raise EMInputError(path, "checkpoint does not record its network class")
        spec = {"cls": default_net, "config": config_from_hparams(import_object(default_net), hp)}
    run, prior = checkpoint_budget(obj)
    return ModelCard(name=path.stem, architecture=Architecture(**spec), parameters=0,
                     io=io_for(dp.get("mode"), dp.get("target")), field_of_view_px=dp.get("patch") or dp.get("size"),
                     training=Training(recipe={"model": hp, "data": dp}, run=run, cumulative=prior + run,
                                       init_from=hp.get("init_from"), source_checkpoint=str(path)))


# ----------------------------------------------------------------------------------------------- loading


def build(card: ModelCard, state: dict[str, torch.Tensor] | None, path: str | os.PathLike | None = None) -> nn.Module:
    """The network the card describes, with ``state`` loaded (strict), in eval mode."""
    cls = import_object(card.architecture.cls)
    try:
        net = cls(**card.architecture.config)
    except (TypeError, ValueError) as exc:
        raise EMInputError(path, f"invalid architecture in the model card: {str(exc).splitlines()[0]}") from None
    if state is not None:
        try:
            net.load_state_dict(state)
        except RuntimeError:
            raise EMInputError(path, f"weights do not match the {cls.__name__} architecture recorded with them"
                               ) from None
    return net.eval()


def load(name_or_path: str | os.PathLike, package: str | None = None, *, default_net: str | None = None,
         device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Network (eval mode, on ``device``) and its card from a bundled name of ``package``, a ``.pt`` + card or a
    Lightning checkpoint. ``default_net`` (dotted class path) serves checkpoints that do not record their network
    class and ``.pt`` files without a card (the class must then offer ``config_from_state``)."""
    path = resolve(name_or_path, package)
    obj = _torch_load(path)
    state = net_state(obj, path)
    if isinstance(obj, dict) and "state_dict" in obj:
        card = _checkpoint_card(obj, path, default_net)
    else:
        card = read_card(path)
        if card is None:
            cls = import_object(default_net) if default_net else None
            if cls is None or not hasattr(cls, "config_from_state"):
                raise EMInputError(path, "no model card (.json) beside the weights")
            try:
                config = cls.config_from_state(state)
            except ValueError as exc:
                raise EMInputError(path, f"not {cls.__name__} weights: {exc}") from None
            io = getattr(cls, "DEFAULT_IO", {"modes": [], "outputs": [{"name": "output", "scale": "input"}]})
            card = ModelCard(name=path.stem, architecture=Architecture(cls=default_net, config=config), parameters=0,
                             io=IOSpec.model_validate(io))
    net = build(card, state, path)
    card = card.model_copy(update={"parameters": count_parameters(net)})
    return net.to(device), card


# ----------------------------------------------------------------------------------------------- saving


def versions(*packages: str) -> dict[str, str]:
    out = {"torch": torch.__version__}
    for name in ("em_noise", *packages):
        try:
            out[name] = str(importlib.import_module(name).__version__)
        except (ImportError, AttributeError):
            out[name] = "unknown"
    return out


def save(net: nn.Module, pt_path: str | os.PathLike, card: ModelCard) -> tuple[Path, Path]:
    """Write the net's float32 state dict to ``pt_path`` and the card beside it (``.json``), atomically."""
    from em_noise.io import atomic_write, write_text

    pt_path = Path(pt_path)
    pt_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    card = card.model_copy(update={"parameters": count_parameters(net)})
    atomic_write(pt_path, lambda tmp: torch.save(state, tmp), overwrite=True)
    js = write_text(pt_path.with_suffix(".json"), card.model_dump_json(indent=2) + "\n", overwrite=True)
    return pt_path, js


def export(checkpoint: str | os.PathLike, out: str | os.PathLike, config: str | os.PathLike | None = None, *,
           name: str | None = None, package: str | None = None, default_net: str | None = None,
           datamodule: type | None = None, previous: str | None = None, inference: Inference | None = None,
           notes: str = "", device: str | torch.device = "cpu", tune_detection=None,
           config_label: str | None = None) -> tuple[Path, Path, ModelCard]:
    """Write ``<out>/<name>.pt`` + card (``out`` a folder, or a ``.pt`` path) from a ``*-train fit`` checkpoint.

    The cumulative budget adds this run to the budget of the weights it started from: what the checkpoint recorded
    when ``init_from`` was loaded, else the card of ``init_from`` now, else ``previous`` (a card's model name or
    path), which also overrides both. Validation figures come from the run's own fixed-seed validation set
    (``datamodule`` rebuilt from the checkpoint); ``tune_detection(maps, positions) -> dict`` chooses the atom-map
    peak settings when the network has an atom-map output. ``config_label`` is how the card names the config
    (a packaged config's name rather than this machine's path to it; default: ``config`` as given).
    """
    from em_noise.training import hardware, validate

    path = Path(checkpoint)
    if not path.is_file():
        raise EMInputError(path, "checkpoint not found")
    obj = _torch_load(path)
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise EMInputError(path, "not a Lightning checkpoint written by *-train fit")
    card = _checkpoint_card(obj, path, default_net)
    net = build(card, net_state(obj, path), path)
    out = Path(out)
    name = name or (out.stem if out.suffix == ".pt" else path.stem)
    pt = out if out.suffix == ".pt" else out / f"{name}.pt"
    run, prior = checkpoint_budget(obj)
    init = card.training.init_from
    if previous is not None:
        prior = cumulative_budget(previous, package)
    elif not (obj.get("em_noise") or {}).get("init") and init:
        prior = _budget_before(card.training, init, package)
    inference = inference or Inference()
    val, detection = card.validation, None
    if datamodule is not None:
        dm = datamodule(**card.training.recipe["data"])
        dm.setup("validate")
        val, detection = validate(net, dm.val_dataset(), card.io, inference, device=device, tune=tune_detection)
        val = val.model_copy(update={"seed": card.training.recipe["data"].get("val_seed")})
    cfg_path = Path(config) if config is not None else None
    card = card.model_copy(update={
        "name": name, "inference": inference, "validation": val, "detection": detection, "notes": notes,
        "training": card.training.model_copy(update={
            "run": run, "cumulative": prior + run, "hardware": wallclock_state(obj).get("hardware") or hardware(),
            "source_checkpoint": path.name,
            "config": None if cfg_path is None else (config_label or str(config)),
            "config_yaml": cfg_path.read_text() if cfg_path is not None and cfg_path.is_file() else None}),
        "versions": versions(*([package] if package else [])),
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    })
    pt, js = save(net, pt, card)
    return pt, js, ModelCard.model_validate_json(js.read_text())
