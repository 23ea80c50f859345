"""``denza-recon``: reconstruct a volume from an ADF-STEM tilt series (DenZa-Gaussian, SIRT or FBP)."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from em_noise.cliutil import HelpFormatter, add_device_arg, resolve_device, run
from em_noise.errors import EMInputError

EPILOG = """examples:
  denza-recon examples/nanoparticle_tilts.mrc                 # angles from nanoparticle_tilts.tlt
  denza-recon tilts.tif --angles=-70:70:10 --holdout 5 -o out/particle.mrc
  denza-recon tilts.st --method sirt --iters 50 --bin 2 --align

outputs (default next to the input): <stem>.<method>.mrc (volume Z,Y,X, voxel = pixel size x bin),
<stem>.<method>.reproj.mrc (reprojections at the input angles), <stem>.<method>.preview.png
(XY, XZ, YZ central slices and the max projection), <stem>.<method>.json (report).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="denza-recon",
        description="Tomographic reconstruction of a (sparse, missing-wedge) ADF-STEM tilt series with 3-D Gaussians "
        "carrying a scattering strength (DenZa-Gaussian), or with ASTRA SIRT/FBP on the CPU.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("tilts", help="tilt series .mrc/.st/.ali (angles from .tlt/.rawtlt beside it or the FEI header) or .tif with --angles")
    p.add_argument("--angles", metavar="FILE|START:STOP:STEP", default=None, help="tilt angles in degrees (file: one per line); write a negative range as --angles=-70:70:2")
    p.add_argument("--tilt-axis", choices=("y", "x"), default="y", help="image axis the tilt axis runs along (y = IMOD)")
    p.add_argument("-o", "--output", metavar="OUT.mrc", default=None, help="volume file; the other outputs go beside it")
    p.add_argument("--bin", type=int, default=1, metavar="K", help="bin images K x K before reconstruction")
    p.add_argument("--size", type=int, default=None, metavar="N", help="resample so the volume is N voxels wide (default: image width after --bin)")
    p.add_argument("--thickness", type=int, default=None, metavar="NZ", help="volume thickness in voxels (default: volume width)")
    p.add_argument("--iters", type=int, default=None, metavar="N", help="optimization steps (denza; default 6 per view, 200-400) or SIRT iterations (default 50)")
    p.add_argument("--holdout", type=int, default=0, metavar="K", help="keep every K-th tilt out of training and report its PSNR")
    p.add_argument("--method", choices=("denza", "sirt", "fbp"), default="denza", help="reconstruction method")
    p.add_argument("--align", action="store_true", help="cross-correlation alignment and tilt-axis centring (shifts reported)")
    add_device_arg(p)
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="CPU threads for PyTorch (the splatting kernels are small: one thread is usually fastest)")
    p.add_argument("--seed", type=int, default=0, help="random seed (results are deterministic on the CPU)")
    p.add_argument("--preview", action=argparse.BooleanOptionalAction, default=True, help="write the PNG preview")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (never the input)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar (default: shown)")
    return p


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from .pipeline import ReconOptions, reconstruct_file

    if args.threads < 1:
        raise EMInputError(None, f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)

    opts = ReconOptions(
        angles=args.angles, tilt_axis=args.tilt_axis, output=args.output, bin_factor=args.bin, size=args.size,
        thickness=args.thickness, iterations=args.iters, holdout=args.holdout, method=args.method, align=args.align,
        device=str(resolve_device(args.device)), seed=args.seed, preview=args.preview, overwrite=args.overwrite,
        progress=args.progress,
    )
    report = reconstruct_file(args.tilts, opts)
    held = report.get("heldout")
    msg = f"{report['method']}: {report['views']} views, {report['seconds']:.1f} s -> {report['outputs']['volume']}"
    if held:
        msg += f"; held-out PSNR {held['psnr_db']:.2f} dB"
    print(msg)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: errors in the input are one line on stderr and exit code 2."""
    return run(_main, argv, prog="denza-recon")


if __name__ == "__main__":
    raise SystemExit(main())
