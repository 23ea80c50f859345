"""Command-line tools: ``scgn-denoise`` (apply SCGN to HRTEM frames/movies) and ``scgn-train`` (train, export)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from em_noise.cliutil import HelpFormatter, add_device_arg, add_output_args, add_tiling_args, resolve_device, run
from em_noise.errors import EMInputError

SUFFIX = "denoised"

class _Formatter(HelpFormatter):
    """Shows defaults, except ``None`` ones (their help says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


DENOISE_EPILOG = """examples:
  scgn-denoise examples/hrtem_frame.tif
  scgn-denoise movie.tif --atoms -o out/            # denoised stack + out/movie.atoms.csv (every frame)
  scgn-denoise a.mrc b.dm4 --model my_finetuned.ckpt --device cuda --preview
outputs <stem>.denoised.<ext> (pixel size / MRC header kept; .dm4/.emd/.ser are written as .tif) and, with
--atoms, <stem>.atoms.csv with columns frame, x_px, y_px, x_A, y_A, intensity (Å columns empty without a pixel size).
"""


def build_denoise_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scgn-denoise", description="Denoise HRTEM frames or movies with SCGN.",
                                epilog=DENOISE_EPILOG, formatter_class=_Formatter)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                   help="image files or stacks (.tif .mrc .dm4 .emd .png .npy ...); every frame is denoised")
    p.add_argument("--model", default="hrtem", metavar="NAME|PATH",
                   help="bundled weights name (hrtem) or a .pt/.ckpt file from scgn-train")
    p.add_argument("--atoms", action="store_true", help="also locate atom columns and write <stem>.atoms.csv")
    p.add_argument("--atoms-contrast", choices=("auto", "model", "dark", "bright"), default="auto",
                   help="how --atoms finds columns: 'model' = peaks of the atom map of the --atoms-model network "
                        "(no contrast assumption); 'auto' = per frame, where that map and the denoised frame clearly "
                        "agree, peaks of the denoised frame of the contrast the map shows (more precise), else as "
                        "'model'; 'dark'/'bright' = peaks of the denoised frame when the columns are known to be dark "
                        "(e.g. Scherzer-type underfocus) or bright")
    p.add_argument("--atoms-model", default="hrtem-atoms", metavar="NAME|PATH",
                   help="atom-map network for --atoms-contrast auto|model (bundled: hrtem-atoms)")
    p.add_argument("--min-distance", type=float, default=None, metavar="PX",
                   help="minimum distance between columns in px for --atoms (default: the atoms model card's for "
                        "peaks of the atom map, 3 for peaks of the frame)")
    p.add_argument("--threshold", type=float, default=None, metavar="VALUE",
                   help="--atoms peak threshold: minimum atom-map value (0-1) for peaks of the map (default: the "
                        "card's), minimum height as a fraction of the frame's range for peaks of the frame (default "
                        "0.5); with 'auto' it applies to whichever the frame uses")
    add_device_arg(p)
    add_tiling_args(p)
    p.set_defaults(tile_size=None, tile_overlap=None)  # None -> from the model
    for action in p._actions:  # the networks run best at the tile size they were trained on (stored with them)
        if action.dest == "tile_size":
            action.help = "tile edge in px (default: the model's training patch, 64 for the bundled weights)"
        elif action.dest == "tile_overlap":
            action.help = "overlap between tiles in px (default: a quarter of the tile)"
    add_output_args(p, SUFFIX)
    return p


def _predictor(net, device):
    import torch

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(x.to(device)).float().cpu()

    return predict


def _tiling(args: argparse.Namespace, info: dict) -> tuple[int, int]:
    from scgn.weights import inference_tiling

    tile, overlap = inference_tiling(info)
    tile = args.tile_size if args.tile_size is not None else tile
    overlap = args.tile_overlap if args.tile_overlap is not None else min(overlap, tile // 4)
    if tile < 16 or overlap < 0 or overlap * 2 >= tile:
        raise EMInputError(None, f"need --tile-size >= 16 and 0 <= --tile-overlap < tile-size/2 (got {tile}, {overlap})")
    return tile, overlap


def _denoise(argv: Sequence[str] | None) -> int:
    args = build_denoise_parser().parse_args(argv)  # before the heavy imports: --help stays instant

    from em_noise.io import output_path
    from em_noise.restore import restore_file

    from scgn import localize
    from scgn.weights import load_model

    for path in args.inputs:
        if not path.is_file():
            raise EMInputError(path, "no such file")
    device = resolve_device(args.device)
    net, card = load_model(args.model, device)
    tile, overlap = _tiling(args, card)
    predict = _predictor(net, device)
    if args.atoms:
        predict_atoms, map_detection, (atoms_tile, atoms_overlap) = None, None, (tile, overlap)
        if args.atoms_contrast in ("auto", "model"):
            atoms_net, atoms_card = load_model(args.atoms_model, device)
            atoms_tile, atoms_overlap = _tiling(args, atoms_card)
            predict_atoms = _predictor(atoms_net, device)
            map_detection = atoms_card.get("detection")  # peak settings of the atom map, chosen on validation
    for path in args.inputs:
        csv_path = None
        if args.atoms:
            csv_path = output_path(path, "atoms", args.output, ext=".csv")
            if csv_path.exists() and not args.overwrite:
                raise EMInputError(csv_path, "output exists; use --overwrite to replace it")
        res = restore_file(path, predict, suffix=SUFFIX, out_dir=args.output, overwrite=args.overwrite,
                           tile_size=tile, overlap=overlap, preview=args.preview, progress=True)
        print(f"wrote {res.output}", file=sys.stderr)
        if csv_path is not None:
            frames = res.source.data if res.source.data.ndim == 3 else res.source.data[None]
            outs = res.data if res.data.ndim == 3 else res.data[None]
            frames_it = frames
            if len(frames) > 1:
                from tqdm.auto import tqdm

                frames_it = tqdm(frames, desc=f"{path.name} atoms", unit="frame")
            table = localize.locate_atoms(predict_atoms, frames_it, outs, pixel_size_A=res.source.pixel_size_A,
                                          contrast=args.atoms_contrast, min_distance_px=args.min_distance,
                                          threshold=args.threshold, map_detection=map_detection,
                                          tile_size=atoms_tile, overlap=atoms_overlap)
            localize.write_atoms_csv(csv_path, table, overwrite=args.overwrite)
            print(f"wrote {csv_path} ({len(table)} columns in {len(frames)} frame(s))", file=sys.stderr)
    return 0


def denoise_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scgn-denoise``."""
    return run(_denoise, argv, prog="scgn-denoise")


TRAIN_EPILOG = """examples:
  scgn-train fit --config packages/scgn/configs/hrtem.yaml
  scgn-train fit --config packages/scgn/configs/hrtem.yaml --ckpt_path runs/scgn/hrtem/checkpoints/last.ckpt  # resume
  scgn-train fit --config packages/scgn/configs/hrtem.yaml --model.init_from hrtem --data.noise my_params.json  # own noise
  scgn-train export runs/scgn/hrtem/checkpoints/last.ckpt --name hrtem --config packages/scgn/configs/hrtem.yaml
"""


def build_export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scgn-train export", formatter_class=HelpFormatter, epilog=TRAIN_EPILOG,
                                description="Export a scgn-train checkpoint as weights (.pt) + JSON card; "
                                            "re-runs the fixed-seed validation for the card.")
    p.add_argument("checkpoint", type=Path, help="Lightning checkpoint written by 'scgn-train fit'")
    p.add_argument("--name", required=True, help="weights name (hrtem, hrtem-atoms for the bundled ones)")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="DIR",
                   help="output folder (default: the package's bundled weights folder)")
    p.add_argument("--config", default=None, help="the YAML config the run used (recorded in the card)")
    p.add_argument("--previous-budget-s", type=float, default=0.0,
                   help="training wall time (s) of earlier runs this one resumed from")
    p.add_argument("--notes", default="", help="free text for the card")
    return p


def _export(argv: Sequence[str]) -> int:
    from scgn.export import export_checkpoint

    args = build_export_parser().parse_args(argv)
    pt, js, card = export_checkpoint(args.checkpoint, args.name, out_dir=args.output, config_file=args.config,
                                     previous_budget_s=args.previous_budget_s, notes=args.notes)
    v = card["validation"]
    print(f"wrote {pt} and {js}: {card['steps']} steps, val PSNR {v['psnr_db']} dB, SSIM {v['ssim']}",
          file=sys.stderr)
    return 0


def _train(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "export":
        return _export(argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: scgn-train {fit,validate,test,predict,export} ...\n\n"
              "Train SCGN on synthetic HRTEM nucleation data (LightningCLI) or export a checkpoint.\n"
              "'scgn-train fit --help' lists every option; configs live in packages/scgn/configs/.\n\n"
              + TRAIN_EPILOG)
        return 0
    from lightning.pytorch.cli import LightningCLI

    from scgn.data import HRTEMDataModule
    from scgn.module import SCGNModule

    LightningCLI(SCGNModule, HRTEMDataModule, args=argv, seed_everything_default=0,
                 save_config_kwargs={"overwrite": True}, parser_kwargs={"prog": "scgn-train"})
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scgn-train``."""
    return run(_train, argv, prog="scgn-train")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(denoise_main())
