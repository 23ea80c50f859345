"""Command-line tools: ``sfin-enhance`` (apply a model), ``sfin-train`` (LightningCLI), ``sfin-export`` (bundle weights)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from em_noise import cliutil
from em_noise.errors import EMInputError

ENHANCE_EPILOG = """\
examples:
  sfin-enhance examples/haadf_frame.tif                 # -> examples/haadf_frame.enhanced.tif
  sfin-enhance frames/*.dm4 -o enhanced/ --preview      # DM3/DM4/EMD/SER are written as .tif
  sfin-enhance bf_stack.mrc --mode bf --device cuda
  sfin-enhance frame.tif --model runs/sfin/my.ckpt      # a checkpoint or state dict from sfin-train

Each frame is scaled so that its 0.1/99.9 intensity percentiles map to 0/1 (the training range), enhanced,
and mapped back to the input's units. Frames are enhanced in overlapping tiles; without --tile-size the model
card's recommendation is used (bundled models: their 64 px training patch, 16 px overlap — the Fourier branch
is tuned to that field of view), else 512 / 64.
"""

TRAIN_EPILOG = """\
examples:
  sfin-train fit --config packages/sfin/configs/haadf.yaml
  sfin-train fit --config packages/sfin/configs/haadf.yaml --ckpt_path runs/sfin/haadf/checkpoints/last.ckpt  # resume
  sfin-train fit --config packages/sfin/configs/finetune.yaml --model.init_from haadf --data.noise params.json
  sfin-train fit --config packages/sfin/configs/haadf.yaml --trainer.accelerator gpu --trainer.devices 4 \\
      --trainer.num_nodes 2 --trainer.strategy ddp                                                     # multi-GPU
"""


def build_enhance_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sfin-enhance",
        description="Enhance atomic-resolution HAADF / BF STEM images with SFIN (remove background, scan and "
        "pointwise noise; sharpen atom columns). Writes <stem>.enhanced.<ext> with the input's pixel size.",
        epilog=ENHANCE_EPILOG, formatter_class=cliutil.HelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="images or stacks (TIFF, MRC, DM3/DM4, EMD, SER, PNG, NPY)")
    cliutil.add_output_args(p, suffix="enhanced")
    p.add_argument("--mode", choices=("haadf", "bf"), default="haadf", help="imaging mode; picks the bundled model")
    p.add_argument("--model", metavar="NAME|PATH", default=None,
                   help="bundled model name (haadf, bf) or a checkpoint / state-dict path; default: the --mode model")
    cliutil.add_device_arg(p)
    cliutil.add_tiling_args(p)
    # None: the tiling recommended by the model's card (bundled models: their training patch), else 512 / 64
    p.set_defaults(tile_size=None, tile_overlap=None)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def _enhance(argv: Sequence[str] | None) -> int:
    args = build_enhance_parser().parse_args(argv)
    from sfin.enhance import enhance_file
    from sfin.pretrained import load_model, recommended_tiling

    ref = args.model or args.mode
    tile, overlap = recommended_tiling(ref)
    tile = args.tile_size if args.tile_size is not None else tile
    if args.tile_overlap is not None:
        overlap = args.tile_overlap
    elif args.tile_size is not None:
        overlap = args.tile_size // 8  # e.g. 512 -> 64
    if tile < 16:
        raise EMInputError(None, f"--tile-size must be at least 16 px, got {tile}")
    if overlap < 0 or 2 * overlap >= tile:
        raise EMInputError(None, f"--tile-overlap must be >= 0 and < tile-size/2, got {overlap}")
    device = cliutil.resolve_device(args.device)
    net = load_model(ref, device=device)
    failed = 0
    for path in args.inputs:
        try:
            res = enhance_file(path, net, device=device, out_dir=args.output, overwrite=args.overwrite,
                               tile_size=tile, overlap=overlap, preview=args.preview,
                               progress=not args.quiet)
        except EMInputError as exc:  # one line per bad input; the other inputs are still processed
            print(f"sfin-enhance: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        if not args.quiet:
            print(f"{path} -> {res.output}" + (f" (+ {res.preview})" if res.preview else ""), file=sys.stderr)
    return 2 if failed else 0


def enhance_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sfin-enhance``."""
    return cliutil.run(_enhance, argv, prog="sfin-enhance")


def _train(argv: Sequence[str] | None) -> int:
    from lightning.pytorch.cli import LightningCLI

    from sfin.data import STEMDataModule
    from sfin.module import SFINModule

    LightningCLI(
        SFINModule, STEMDataModule, args=None if argv is None else list(argv),
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "sfin-train", "epilog": TRAIN_EPILOG,
                       "formatter_class": argparse.RawDescriptionHelpFormatter},
    )
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sfin-train`` (Lightning's CLI: fit / validate / test / predict)."""
    return cliutil.run(_train, argv, prog="sfin-train")


def build_export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sfin-export",
        description="Export a sfin-train checkpoint as a state dict + JSON card (config, steps, wall time, "
        "validation PSNR/SSIM on the checkpoint's fixed-seed validation set).",
        epilog="example:\n  sfin-export runs/sfin/haadf/checkpoints/last.ckpt "
        "packages/sfin/src/sfin/weights/haadf.pt --config packages/sfin/configs/haadf.yaml",
        formatter_class=cliutil.HelpFormatter,
    )
    p.add_argument("checkpoint", help="Lightning checkpoint written by sfin-train")
    p.add_argument("output", help="output .pt (the card is written next to it as .json)")
    p.add_argument("--config", default=None, help="training YAML to quote in the card")
    p.add_argument("--previous-card", default=None,
                   help="card of the weights this run resumed/fine-tuned from (its budget is added to the cumulative one)")
    p.add_argument("--note", default=None, help="free text stored in the card (e.g. budget, caveats)")
    p.add_argument("--inference-tile", type=int, default=None,
                   help="recommended inference tile (px) stored in the card; default: the training patch size")
    p.add_argument("--inference-overlap", type=int, default=None, help="its overlap (px); default: tile / 4")
    cliutil.add_device_arg(p)
    return p


def _export(argv: Sequence[str] | None) -> int:
    args = build_export_parser().parse_args(argv)
    from sfin.export import export_checkpoint

    card = export_checkpoint(args.checkpoint, args.output, config_path=args.config,
                             previous_card=args.previous_card, device=cliutil.resolve_device(args.device),
                             note=args.note, tile_size=args.inference_tile, overlap=args.inference_overlap)
    print(f"{args.output}: val PSNR {card['validation']['psnr_dB']:.2f} dB, SSIM {card['validation']['ssim']:.4f}, "
          f"{card['training']['steps']} steps", file=sys.stderr)
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sfin-export``."""
    return cliutil.run(_export, argv, prog="sfin-export")
