"""Command-line tools: ``sfin-enhance`` (apply a model) and ``sfin-train`` (train, export)."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from em_noise import cliutil
from em_noise.modelcli import TrainCommand, add_inference_args, check_tiling_args

SUFFIX = "enhanced"

ENHANCE_EPILOG = """\
examples:
  sfin-enhance examples/haadf_frame.tif                 # -> examples/haadf_frame.enhanced.tif
  sfin-enhance frames/*.dm4 -o enhanced/ --preview      # DM3/DM4/EMD/SER/PNG inputs are written as float32 .tif
  sfin-enhance bf_stack.mrc --mode bf --device cuda
  sfin-enhance frame.tif --units input                  # output in the input's units instead of 0-255
  sfin-enhance frame.tif --model runs/sfin/stem/checkpoints/last.ckpt   # a checkpoint of sfin-train

Output scale: the SFIN paper's 0-255 float scale of the enhancement target: HAADF background 0 and the brightest
column 255; BF the inverse (vacuum 255). The enhancement removes the background, so values can go below 0 where
the network overshoots. --units input maps the result to the input's units instead (the frame's 0.1 / 99.9
percentiles, the network's input range). Outputs are float32 (TIFF unless the input is MRC or NPY) with the input's
pixel size; --uint8 writes 8-bit. Frames run whole up to the model card's tile size (512 px for the bundled models),
larger ones in blended tiles. A bad input is reported and skipped; the exit code is then 2.
"""

TRAIN = TrainCommand(
    prog="sfin-train", package="sfin", module="sfin.module.SFINModule", datamodule="sfin.data.STEMDataModule",
    net="sfin.model.SFIN",
    description="Train SFIN on em-noise's synthetic STEM data (Lightning's CLI) or export a checkpoint as a model.",
    epilog="""examples:
  sfin-train fit --config stem                                             # the bundled haadf/bf recipe
  sfin-train fit --config stem --ckpt_path runs/sfin/stem/checkpoints/last.ckpt    # resume a stopped run
  sfin-train fit --config stem --model.init_from haadf                     # continue the bundled model
  sfin-train fit --config finetune --data.noise params.json                # own instrument's noise
  sfin-train export runs/sfin/stem/checkpoints/last.ckpt --name haadf --config stem
  sfin-train fit --config stem --trainer.accelerator gpu --trainer.devices 4 --trainer.strategy ddp
""")


def _version() -> str:
    from sfin import __version__

    return __version__


def build_enhance_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sfin-enhance",
        description="Enhance atomic-resolution HAADF / BF STEM images with SFIN (remove background, scan and "
        "pointwise noise; sharpen atom columns). Writes <stem>.enhanced.<ext> with the input's pixel size.",
        epilog=ENHANCE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="images or stacks (TIFF, MRC, DM3/DM4, EMD, SER, PNG, NPY)")
    cliutil.add_output_args(p, suffix=SUFFIX)
    cliutil.add_version_arg(p, "sfin-enhance", _version())
    p.add_argument("--mode", choices=("haadf", "bf"), default="haadf",
                   help="detector; picks the bundled model and, for a model serving both, inverts BF frames before "
                        "and after the network (default: haadf)")
    p.add_argument("--model", metavar="NAME|PATH", default=None,
                   help="bundled model (haadf, bf), a .pt with its .json card or a checkpoint (default: the --mode "
                        "model)")
    p.add_argument("--units", choices=("paper", "input"), default="paper",
                   help="output scale: 'paper' (0-255, background 0) or 'input' (the input's units) (default: paper)")
    cliutil.add_device_arg(p)
    add_inference_args(p)
    return p


def _enhance(argv: Sequence[str] | None) -> int:
    args = build_enhance_parser().parse_args(argv)
    from em_noise.restore import planned_output, restore_file, run_inputs

    check_tiling_args(args.tile_size, args.tile_overlap)

    def plan(path: Path) -> list[Path]:
        out = planned_output(path, SUFFIX, args.output, args.uint8)
        return [out, out.with_name(f"{path.stem}.{SUFFIX}.preview.png")] if args.preview else [out]

    def load():
        from sfin.api import enhancer

        return enhancer(args.model, args.mode, device=cliutil.resolve_device(args.device), tile_size=args.tile_size,
                        overlap=args.tile_overlap)

    def process(runner, path: Path, outs: list[Path]) -> str:
        import sfin

        restore_file(runner, path, outs[0], output=runner.card.io.outputs[0].name, mode=args.mode, units=args.units,
                     uint8=args.uint8, preview=outs[1] if args.preview else None, overwrite=args.overwrite,
                     progress=not args.quiet, provenance={"program": "sfin-enhance", "version": sfin.__version__})
        return f"{path} -> {', '.join(map(str, outs))}"

    return run_inputs(args.inputs, plan, load, process, prog="sfin-enhance", overwrite=args.overwrite,
                      quiet=args.quiet, other_inputs=[args.model] if args.model else [])


def enhance_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sfin-enhance``."""
    return cliutil.run(_enhance, argv, prog="sfin-enhance")


train_main = TRAIN.run  # entry point of ``sfin-train``
