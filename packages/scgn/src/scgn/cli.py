"""Command-line tools: ``scgn-denoise`` (apply SCGN to HRTEM frames/movies) and ``scgn-train`` (train, export)."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from em_noise import cliutil
from em_noise.modelcli import TrainCommand, add_inference_args, check_tiling_args

from scgn import localize

SUFFIX = "denoised"

DENOISE_EPILOG = """examples:
  scgn-denoise examples/hrtem_frame.tif
  scgn-denoise movie.tif --atoms -o out/            # denoised stack + out/movie.atoms.csv (every frame)
  scgn-denoise a.mrc b.dm4 --model my_finetuned.pt --device cuda --preview

Outputs <stem>.denoised.<ext>: float32 in the input's units (TIFF unless the input is MRC or NPY; --uint8 for
8-bit), pixel size and MRC header kept. With --atoms, <stem>.atoms.csv: frame, x_px, y_px, x_A, y_A, intensity,
confidence (Å columns empty without a pixel size). Columns are reported only where the frame shows a 2-D lattice
(two non-collinear reflections in the spectra of 128 px windows of the denoised frame, confirmed in the input):
vacuum, amorphous film and interference fringes give none. Frames run whole up to the model card's tile size,
larger ones in blended tiles. A bad input is reported and skipped; the exit code is then 2.
"""

TRAIN = TrainCommand(
    prog="scgn-train", package="scgn", module="scgn.module.SCGNModule", datamodule="scgn.data.HRTEMDataModule",
    net="scgn.model.SCGN", tune_detection="scgn.localize.tune_detection",
    description="Train SCGN on em-noise's synthetic HRTEM nucleation data (Lightning's CLI) or export a checkpoint "
                "as a model.",
    epilog="""examples:
  scgn-train fit --config hrtem                                              # the bundled hrtem recipe
  scgn-train fit --config hrtem --ckpt_path runs/scgn/hrtem/checkpoints/last.ckpt   # resume a stopped run
  scgn-train fit --config hrtem --model.init_from hrtem --data.noise my_params.json  # own noise
  scgn-train export runs/scgn/hrtem/checkpoints/last.ckpt --name hrtem --config hrtem
  scgn-train fit --config hrtem --trainer.accelerator gpu --trainer.devices 4 --trainer.strategy ddp
""")


def _version() -> str:
    from scgn import __version__

    return __version__


def build_denoise_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scgn-denoise", description="Denoise HRTEM frames or movies with SCGN and "
                                "optionally locate the atom columns.", epilog=DENOISE_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                   help="image files or stacks (.tif .mrc .dm4 .emd .png .npy ...); every frame is denoised")
    cliutil.add_output_args(p, SUFFIX)
    cliutil.add_version_arg(p, "scgn-denoise", _version())
    p.add_argument("--model", default="hrtem", metavar="NAME|PATH",
                   help="bundled model (hrtem), a .pt with its .json card or a checkpoint of scgn-train (default: "
                        "hrtem)")
    p.add_argument("--atoms", action="store_true", help="also locate atom columns and write <stem>.atoms.csv")
    p.add_argument("--atoms-contrast", choices=localize.CONTRASTS, default=localize.DEFAULT_CONTRAST,
                   help="how --atoms finds candidate columns: 'model' = peaks of the atom map (no contrast "
                        "assumption); 'auto' (default) = per frame, where the map and the denoised frame clearly "
                        "agree, peaks of the denoised frame of the contrast the map shows, else as 'model'; "
                        "'dark'/'bright' = peaks of the denoised frame when the columns are known to be dark "
                        "(e.g. Scherzer-type underfocus) or bright")
    p.add_argument("--atoms-model", default=None, metavar="NAME|PATH",
                   help="atom-map network for a one-output --model (default: the model's own atom-map output, else "
                        "the bundled hrtem-atoms)")
    p.add_argument("--min-distance", type=float, default=None, metavar="PX",
                   help="minimum distance between columns in px (default: the model card's for peaks of the atom "
                        "map, 3 for peaks of the frame)")
    p.add_argument("--threshold", type=float, default=None, metavar="VALUE",
                   help="peak threshold: minimum atom-map value (0-1) for peaks of the map (default: the card's), "
                        "minimum height as a fraction of the frame's range for peaks of the frame (default 0.5)")
    cliutil.add_device_arg(p)
    add_inference_args(p)
    return p


def _denoise(argv: Sequence[str] | None) -> int:
    args = build_denoise_parser().parse_args(argv)  # before the heavy imports: --help stays instant
    from em_noise.io import output_path
    from em_noise.restore import planned_output, read_frames, run_inputs, write_output, write_preview

    check_tiling_args(args.tile_size, args.tile_overlap)

    def plan(path: Path) -> list[Path]:
        out = planned_output(path, SUFFIX, args.output, args.uint8)
        return ([out] + ([output_path(path, "atoms", args.output, ext=".csv")] if args.atoms else [])
                + ([out.with_name(f"{path.stem}.{SUFFIX}.preview.png")] if args.preview else []))

    def load():
        from scgn.api import prepare

        return prepare(args.model, atoms=args.atoms, contrast=args.atoms_contrast, atoms_model=args.atoms_model,
                       device=cliutil.resolve_device(args.device), tile_size=args.tile_size,
                       overlap=args.tile_overlap)

    def process(models, path: Path, outs: list[Path]) -> str:
        from scgn.api import process as run
        from scgn.localize import write_atoms_csv

        img = read_frames(path)
        denoised, table = run(*models, img.data, atoms=args.atoms, contrast=args.atoms_contrast,
                              pixel_size_A=img.pixel_size_A, min_distance_px=args.min_distance,
                              threshold=args.threshold, progress=not args.quiet, desc=path.name)
        import scgn

        prov = models[0].provenance(program="scgn-denoise", version=scgn.__version__, units="input")
        write_output(outs[0], denoised, img, uint8=args.uint8, overwrite=args.overwrite, provenance=prov)
        line = f"{path} -> {outs[0]}"
        if table is not None:
            write_atoms_csv(outs[1], table, overwrite=args.overwrite)
            n = img.data.shape[0] if img.data.ndim == 3 else 1
            line += f", {outs[1]} ({len(table)} columns in {n} frame(s))"
        if args.preview:
            write_preview(outs[-1], img.data, denoised, name=path.name, titles=("input", SUFFIX),
                          pixel_size_A=img.pixel_size_A, overwrite=args.overwrite)
        return line

    return run_inputs(args.inputs, plan, load, process, prog="scgn-denoise", overwrite=args.overwrite,
                      quiet=args.quiet, other_inputs=[args.model, args.atoms_model])


def denoise_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scgn-denoise``."""
    return cliutil.run(_denoise, argv, prog="scgn-denoise")


train_main = TRAIN.run  # entry point of ``scgn-train``


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(denoise_main())
