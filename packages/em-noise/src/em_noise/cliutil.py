"""Pieces shared by the toolkit's command-line tools: common options, device choice, error handling."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from em_noise.errors import EMInputError


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None,
        prog: str | None = None) -> int:
    """Run a CLI body; bad input becomes one line on stderr and exit code 2, never a traceback."""
    prog = prog or (sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "em-noise")
    try:
        return int(main(argv) or 0)
    except EMInputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prog}: error: out of memory; lower --tile-size (or --size/--bin for reconstructions)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the example block of the epilog as written and shows defaults."""


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run: auto uses CUDA when available, else the CPU")


def add_tiling_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile-size", type=int, default=512,
                        help="tile edge in px for tiled inference (lower it if memory runs out)")
    parser.add_argument("--tile-overlap", type=int, default=64, help="overlap between neighbouring tiles in px")


def add_output_args(parser: argparse.ArgumentParser, suffix: str) -> None:
    parser.add_argument("-o", "--output", metavar="DIR", default=None,
                        help="output directory (created if missing); "
                             f"default: next to each input as <stem>.{suffix}.<ext>")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (never the input)")
    parser.add_argument("--preview", action="store_true", help="also write a side-by-side PNG preview")


def resolve_device(name: str):
    """'auto' | 'cpu' | 'cuda' -> torch.device; asking for CUDA on a machine without it is an input error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise EMInputError(None, "--device cuda requested but no CUDA device is available (use --device cpu)")
        return torch.device("cuda")
    if name == "cpu":
        return torch.device("cpu")
    raise EMInputError(None, f"unknown device {name!r}; use auto, cpu or cuda")
