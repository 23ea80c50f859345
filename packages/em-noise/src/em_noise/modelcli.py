"""Command-line pieces of the method packages (sfin, scgn): the options of their restoration commands and the
shared ``*-train`` command — Lightning's CLI (``fit``, ``validate``, ``test``, ``predict``) plus ``export`` (a
checkpoint -> weights + model card), with training configs by packaged name.

Importing this module, ``--help`` and ``export --help`` import neither torch nor the training stack (Lightning).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from em_noise.errors import EMInputError

SUBCOMMANDS = ("fit", "validate", "test", "predict", "export")


def add_inference_args(parser: Any) -> None:
    """Options every restoration CLI shares: tiling from the model card, 8-bit output on request, quiet."""
    parser.add_argument("--tile-size", type=int, default=None, metavar="PX",
                        help="largest tile edge in px: frames up to it run whole, larger ones in blended tiles "
                             "(default: the model card's, 1024 for models trained on whole frames)")
    parser.add_argument("--tile-overlap", type=int, default=None, metavar="PX",
                        help="overlap of neighbouring tiles in px (default: the card's, or tile / 8 with --tile-size)")
    parser.add_argument("--uint8", action="store_true",
                        help="write 8-bit output (rounded, clipped to 0-255; PNG for a PNG input, else TIFF) instead "
                             "of float32")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or per-file lines")


def check_tiling_args(tile_size: int | None, overlap: int | None) -> None:
    """Refuse impossible --tile-size / --tile-overlap before any model is loaded."""
    if tile_size is not None and tile_size < 16:
        raise EMInputError(None, f"--tile-size must be at least 16 px, got {tile_size}")
    if overlap is not None and (overlap < 0 or 2 * overlap >= (tile_size or 1 << 30)):
        raise EMInputError(None, f"--tile-overlap must be >= 0 and < tile-size/2, got {overlap}")


@dataclass(frozen=True)
class TrainCommand:
    """What a method package plugs into the shared ``*-train`` command (classes as dotted paths, imported late)."""

    prog: str
    package: str
    module: str
    datamodule: str
    net: str
    description: str
    epilog: str = ""
    tune_detection: str | None = None  # function choosing atom-map peak settings at export (atom-map outputs)

    def run(self, argv: Sequence[str] | None = None) -> int:
        """Entry point of the command: :func:`main` with one-line errors and exit codes (em_noise.cliutil.run)."""
        from em_noise.cliutil import run

        return run(lambda a: main(self, a), argv, prog=self.prog)


def config_dir(package: str) -> Path:
    """Folder of a package's training configs (package data)."""
    return Path(str(resources.files(package) / "configs"))


def config_names(package: str) -> list[str]:
    folder = config_dir(package)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def resolve_config(ref: str | Path, package: str) -> Path:
    """A config file path, or the name of a config shipped with ``package`` ('haadf' -> .../configs/haadf.yaml)."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    packaged = config_dir(package) / f"{path.name.removesuffix('.yaml')}.yaml"
    if "/" not in str(ref) and packaged.is_file():
        return packaged
    raise EMInputError(path, f"no such config file or packaged config (packaged: {', '.join(config_names(package))})")


def with_config_paths(argv: Sequence[str], package: str) -> list[str]:
    """``--config NAME`` / ``--config=NAME`` -> the packaged config's path; paths stay as they are."""
    out, args = [], list(argv)
    for i, arg in enumerate(args):
        if i > 0 and args[i - 1] == "--config":
            out.append(str(resolve_config(arg, package)))
        elif arg.startswith("--config="):
            out.append("--config=" + str(resolve_config(arg.split("=", 1)[1], package)))
        else:
            out.append(arg)
    return out


def usage(cmd: TrainCommand) -> str:
    return (f"usage: {cmd.prog} {{{','.join(SUBCOMMANDS)}}} ...\n\n{cmd.description}\n"
            f"'{cmd.prog} fit --help' lists every training option, '{cmd.prog} export --help' the export's.\n"
            f"Packaged configs (--config NAME): {', '.join(config_names(cmd.package))}\n\n{cmd.epilog}")


def export_parser(cmd: TrainCommand) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{cmd.prog} export", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"Export a checkpoint of '{cmd.prog} fit' as <name>.pt + <name>.json (model card: architecture, "
                    "training recipe, cumulative steps and wall time across resumed and continued runs, field of view, "
                    "inference tiling, figures on the run's validation set, versions).",
        epilog=f"example:\n  {cmd.prog} export runs/{cmd.package}/checkpoints/last.ckpt --name NAME --config NAME")
    p.add_argument("checkpoint", type=Path, help="Lightning checkpoint written by 'fit'")
    p.add_argument("--name", required=True, help="model name (bundled names are replaced in place)")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="DIR",
                   help="output folder (default: the package's bundled weights folder)")
    p.add_argument("--config", default=None, metavar="NAME|PATH", help="the training config of the run (quoted in "
                   "the card)")
    p.add_argument("--previous", default=None, metavar="NAME|PATH",
                   help="the model this run continued, when the checkpoint does not record it (its cumulative budget "
                        "is carried forward)")
    p.add_argument("--tile-size", type=int, default=None, help="inference tile edge in px stored in the card "
                   "(frames up to it run whole; default 1024)")
    p.add_argument("--tile-overlap", type=int, default=None, help="tile overlap in px (default: tile / 8)")
    p.add_argument("--pad", type=int, default=0, metavar="PX", help="mirrored border in px added to every frame "
                   "before the network and cropped after, stored in the card (default 0)")
    p.add_argument("--notes", default="", help="free text for the card")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device of the validation run")
    return p


def _export(cmd: TrainCommand, argv: Sequence[str]) -> int:
    args = export_parser(cmd).parse_args(argv)
    from em_noise import weights
    from em_noise.cliutil import resolve_device

    config = resolve_config(args.config, cmd.package) if args.config else None
    inference = None
    if args.pad < 0:
        raise EMInputError(None, f"--pad must be >= 0 px, got {args.pad}")
    if args.tile_size is not None or args.tile_overlap is not None or args.pad:
        tile = args.tile_size or weights.DEFAULT_TILE_PX
        inference = weights.Inference(tile_size=tile, overlap=tile // 8 if args.tile_overlap is None
                                      else args.tile_overlap, pad_px=args.pad)
    tune = weights.import_object(cmd.tune_detection) if cmd.tune_detection else None
    out = args.output if args.output is not None else weights.bundled_dir(cmd.package)
    pt, js, card = weights.export(
        args.checkpoint, out, config, name=args.name, package=cmd.package, default_net=cmd.net,
        datamodule=weights.import_object(cmd.datamodule), previous=args.previous, inference=inference,
        notes=args.notes, device=resolve_device(args.device), tune_detection=tune, config_label=args.config)
    figures = ", ".join(f"{k} {v.get('psnr_db', float('nan')):.2f} dB" for k, v in card.validation.metrics.items())
    c = card.training.cumulative
    print(f"wrote {pt} and {js}: {card.training.run.steps} steps this run, {c.steps} steps / {c.wall_time_s:.0f} s "
          f"cumulative; validation {figures}", file=sys.stderr)
    return 0


CKPT_PATH_KEYWORDS = ("last", "best", "hpc", "registry", "null", "none")


def option_values(argv: Sequence[str], name: str) -> list[str]:
    """Values of ``name VALUE`` / ``name=VALUE`` in ``argv``."""
    args = list(argv)
    return [args[i + 1] if a == name else a.split("=", 1)[1] for i, a in enumerate(args)
            if (a == name and i + 1 < len(args)) or a.startswith(name + "=")]


def _from_configs(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``ckpt_path`` and ``data.noise`` values set in the ``--config`` files of ``argv``."""
    import yaml

    ckpts, noises = [], []
    for ref in option_values(argv, "--config"):
        try:
            cfg = yaml.safe_load(Path(ref).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue  # Lightning reports a bad config file itself
        if not isinstance(cfg, dict):
            continue
        if isinstance(cfg.get("ckpt_path"), str):
            ckpts.append(cfg["ckpt_path"])
        data = cfg.get("data")
        if isinstance(data, dict) and isinstance(data.get("noise"), str):
            noises.append(data["noise"])
    return ckpts, noises


def preflight(argv: Sequence[str]) -> None:
    """Refuse, as one line before Lightning starts (and writes logs or configs), a ``--ckpt_path`` that is no file
    and a ``--data.noise`` file that is missing, malformed or out of range (given on the command line or in a
    ``--config`` file)."""
    ckpts, noises = _from_configs(argv)
    for ref in [*ckpts, *option_values(argv, "--ckpt_path")]:
        path = Path(ref).expanduser()
        if ref.lower() not in CKPT_PATH_KEYWORDS and not path.is_file():
            raise EMInputError(path, "--ckpt_path: no such checkpoint file" if not path.is_dir() else
                               "--ckpt_path: is a folder, not a checkpoint file")
    for ref in [*noises, *option_values(argv, "--data.noise")]:
        if ref.lower() not in ("null", "none", ""):
            from em_noise.params import read_params

            read_params(ref)


def _save_on_interrupt(prog: str):
    """A Lightning callback: on Ctrl-C / SIGTERM during ``fit``, write the ModelCheckpoint's ``last.ckpt`` (temp
    file + rename) so that ``--ckpt_path`` resumes, and remember the interrupt."""
    import lightning as L

    class SaveOnInterrupt(L.Callback):
        def __init__(self) -> None:
            self.interrupt: KeyboardInterrupt | None = None

        def on_exception(self, trainer, pl_module, exception: BaseException) -> None:  # noqa: ARG002
            if not isinstance(exception, KeyboardInterrupt):
                return
            self.interrupt = exception
            cb = trainer.checkpoint_callback
            if trainer.state.fn != "fit" or cb is None or not getattr(cb, "dirpath", None):
                return
            from em_noise.outputs import OutputSet

            path = Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
            with OutputSet(overwrite=True) as out:
                out.stage(path, trainer.save_checkpoint)
            print(f"{prog}: saved {path} at step {trainer.global_step}; resume with --ckpt_path {path}",
                  file=sys.stderr)

    return SaveOnInterrupt()


def _quiet_lightning_interrupt() -> None:
    """Drop Lightning's own 'Detected KeyboardInterrupt' line: the CLI prints one of its own."""
    import logging

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "Detected KeyboardInterrupt" not in str(record.getMessage())

    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_Drop())
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_Drop())


def main(cmd: TrainCommand, argv: Sequence[str] | None = None) -> int:
    """Body of ``*-train`` (run it through ``em_noise.cliutil.run``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(cmd))
        return 0
    if argv[0] == "--version":
        from importlib.metadata import version

        print(f"{cmd.prog} {version(cmd.package)}")
        return 0
    if argv[0] == "export":
        return _export(cmd, argv[1:])
    if argv[0] not in SUBCOMMANDS:
        raise EMInputError(None, f"unknown subcommand {argv[0]!r}; choose from {', '.join(SUBCOMMANDS)}")
    argv = with_config_paths(argv, cmd.package)
    if not any(a in ("-h", "--help") for a in argv):
        preflight(argv)
    from lightning.pytorch.cli import LightningCLI

    from em_noise.weights import import_object

    _quiet_lightning_interrupt()
    saver = _save_on_interrupt(cmd.prog)
    try:
        LightningCLI(import_object(cmd.module), import_object(cmd.datamodule), args=argv, seed_everything_default=0,
                     save_config_kwargs={"overwrite": True}, trainer_defaults={"callbacks": [saver]},
                     parser_kwargs={"prog": cmd.prog, "epilog": cmd.epilog,
                                    "formatter_class": argparse.RawDescriptionHelpFormatter})
    except SystemExit:
        if saver.interrupt is not None:  # Lightning turns Ctrl-C into exit(1) after its on_exception hooks
            raise saver.interrupt from None
        raise
    return 0
