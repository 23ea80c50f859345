"""``denza-recon``: reconstruct a volume from an ADF-STEM tilt series (DenZa-Gaussian, SIRT or FBP)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from em_noise.cliutil import add_device_arg, add_version_arg, reraise_interrupt, run
from em_noise.errors import EMInputError

from . import __version__

EPILOG = """examples:
  denza-recon examples/nanoparticle_tilts.mrc        # angles from nanoparticle_tilts.tlt, self-tuned
  denza-recon tilts.tif --angles=-70:70:10 --holdout 5 -o out/     # out/tilts.denza.mrc, ...
  denza-recon tilts.tif --angles=-70:70:10 -o out/particle.mrc    # out/particle.mrc, out/particle.json, ...
  denza-recon tilts.st --bin 2 --align               # large or drifting series: bin first, align
  denza-recon tilts.mrc --method sirt                # classical baseline, iterations chosen alike

what it does: the weight of the smoothness term (--lambda-tv), the data misfit (absolute or least
squares) and where to stop are chosen by cross-validation on your own tilts (every 4th tilt held
out, each candidate fitted on the rest and scored on them, the best refitted on all tilts);
--lambda-tv and --iters override the choice.
The candidates, their scores and the choice are in the report.

outputs (default next to the input): <stem>.<method>.mrc (volume Z,Y,X, voxel = pixel size x bin),
<stem>.<method>.reproj.mrc (reprojections at the input angles), <stem>.<method>.preview.png
(XY, XZ, YZ central slices and the max projection), <stem>.<method>.json (report: per-image angle,
gamma and alignment shift in the file's order and axes, tuning, held-out scores, timings);
with --align also <stem>.<method>.ali (the aligned, cropped stack) and <stem>.<method>.xf (shifts).

large series on a CPU: --bin 2 (or 4) divides the work by ~8 (~64); --size N resamples to N px wide.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog as written; appends a default only where it says something (not None/False) and the help
    text does not state it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" not in text and action.default not in (None, False, argparse.SUPPRESS)
                and action.option_strings and action.nargs != 0):
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="denza-recon",
        description="Tomographic reconstruction of a (sparse, missing-wedge) ADF-STEM tilt series with 3-D Gaussians "
        "carrying a scattering strength (DenZa-Gaussian), or with ASTRA SIRT/FBP on the CPU.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument("tilts", nargs="+", metavar="TILTS",
                   help="tilt series .mrc/.st/.ali (angles from a .tlt/.rawtlt/.mdoc beside it or the FEI header) or a "
                   ".tif stack with --angles; several are reconstructed one after the other (a bad one is reported "
                   "and skipped, the exit code is then 2)")
    p.add_argument("--angles", metavar="FILE|START:STOP:STEP", default=None,
                   help="tilt angles in degrees (file: one per line); write a negative range as --angles=-70:70:2")
    p.add_argument("--tilt-axis", choices=("y", "x"), default="y",
                   help="image axis the tilt axis runs along (y = IMOD convention)")
    p.add_argument("-o", "--output", metavar="DIR|OUT.mrc", default=None,
                   help="output folder for <stem>.<method>.mrc and its siblings (created if missing), or, when the "
                   "name ends in .mrc/.rec/.map and is not a folder, the volume file with the other outputs beside "
                   "it (default: next to the input)")
    p.add_argument("--bin", type=int, default=1, metavar="K", help="mean-bin images K x K before reconstruction")
    p.add_argument("--size", type=int, default=None, metavar="N",
                   help="resample so that the volume is N voxels wide (default: the image width after --bin)")
    p.add_argument("--thickness", type=int, default=None, metavar="NZ",
                   help="volume thickness in voxels (default: the volume width)")
    p.add_argument("--method", choices=("denza", "sirt", "fbp"), default="denza", help="reconstruction method")
    p.add_argument("--lambda-tv", type=float, default=None, metavar="W",
                   help="smoothness (3-D TV) weight of DenZa (default: chosen by cross-validation)")
    p.add_argument("--iters", type=int, default=None, metavar="N",
                   help="DenZa steps or SIRT iterations (default: DenZa 250 steps with the stop chosen by "
                   "cross-validation; SIRT chosen by cross-validation)")
    p.add_argument("--no-tune", dest="tune", action="store_false",
                   help="skip the cross-validation and use the fixed defaults (faster; default: tune)")
    p.add_argument("--holdout", type=int, default=0, metavar="K",
                   help="keep every K-th tilt out of everything (tuning included) and report its PSNR (default: off)")
    p.add_argument("--align", action="store_true",
                   help="align the views: cross-correlation, then projection matching, the tilt-axis angle and "
                   "offset; views are cropped to the field all of them cover (shifts in the report, the aligned "
                   "stack in <stem>.<method>.ali and .xf)")
    add_device_arg(p)
    add_version_arg(p, "denza-recon", __version__)
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for PyTorch (default: PyTorch's own, every core unless OMP_NUM_THREADS is set; "
                   "use 1 while another job shares the cores)")
    p.add_argument("--seed", type=int, default=0, help="random seed (results are deterministic on the CPU)")
    p.add_argument("--preview", action=argparse.BooleanOptionalAction, default=True,
                   help="write the PNG preview (default: on)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (never the input)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    return p


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from em_noise.outputs import as_output_error

    from .api import ReconOptions
    from .pipeline import VOLUME_EXTENSIONS, reconstruct_file

    if args.threads is not None and args.threads < 1:
        raise EMInputError(None, f"--threads must be >= 1, got {args.threads}")
    device = "cpu"
    if args.method == "denza":  # the classical methods never load torch
        import torch
        from em_noise.cliutil import resolve_device

        if args.threads is not None:
            torch.set_num_threads(args.threads)
        device = str(resolve_device(args.device))
    elif args.device == "cuda":
        raise EMInputError(None, "--device cuda: the classical methods run on the CPU only")

    opts = ReconOptions(method=args.method, bin_factor=args.bin, size=args.size, thickness=args.thickness,
                        iterations=args.iters, lambda_tv=args.lambda_tv, holdout=args.holdout, align=args.align,
                        tune=args.tune, device=device, seed=args.seed, progress=args.progress)
    if len(args.tilts) > 1 and args.output and Path(args.output).suffix.lower() in VOLUME_EXTENSIONS \
            and not Path(args.output).is_dir():
        raise EMInputError(args.output, "several tilt series need -o DIR, not a volume file name")
    codes = []
    for tilts in args.tilts:
        try:
            report = reconstruct_file(tilts, opts, angles=args.angles, tilt_axis=args.tilt_axis, output=args.output,
                                      preview=args.preview, overwrite=args.overwrite, inputs=args.tilts)
        except (EMInputError, OSError) as exc:
            reraise_interrupt()
            err = exc if isinstance(exc, EMInputError) else as_output_error(exc, tilts, verb="")
            print(f"denza-recon: error: {err}", file=sys.stderr)
            codes.append(int(getattr(err, "exit_code", 2)))
            if codes[-1] == 1:  # a resource ran out (disk full): the next series would fail alike
                break
            continue
        print(_summary(report))
    return 2 if 2 in codes else (1 if codes else 0)


def _summary(report: dict) -> str:
    held = report.get("heldout")
    views = f"{report['training_views']} of {report['views']} views" if held else f"{report['views']} views"
    msg = f"{report['method']}: {views}, {report['seconds']:.1f} s -> {report['outputs']['volume']}"
    tuning = report.get("tuning") or {}
    if "chosen" in tuning:
        msg += f"; cross-validation chose {_fmt_choice(tuning['chosen'])}"
    if held:
        msg += f"; held-out PSNR {held['psnr_db']:.2f} dB on {len(held['file_indices'])} views"
    return msg


def _fmt_choice(chosen) -> str:
    if isinstance(chosen, dict):
        return ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                         for k, v in chosen.items() if k != "schedule")
    return f"{chosen} iterations"


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: errors in the input are one line on stderr and exit code 2."""
    return run(_main, argv, prog="denza-recon")


if __name__ == "__main__":
    raise SystemExit(main())
