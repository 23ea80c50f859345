"""Pieces shared by the toolkit's command-line tools: common options, device choice, errors, exit codes, signals.

Exit codes of every CLI: 0 done; 1 a resource ran out (no space left on the device, disk quota, file size limit,
too many open files, memory); 2 bad input, a bad option or an unusable output path (permission denied, read-only
file system, a file where a folder is needed, an output that is an input); 130 interrupted (Ctrl-C, SIGINT);
143 terminated (SIGTERM). Every failure is one line ``<prog>: error: <path>: <problem>`` on stderr, never a
traceback; an interrupted run leaves no partial output (:mod:`em_noise.outputs`).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence

from em_noise.errors import EMInputError
from em_noise.outputs import as_output_error


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP), raised in the main thread like Ctrl-C so that every cleanup path runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_received: list[int] = []  # signals the handlers saw during this run


def _raise_interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    _received.append(signum)
    raise KeyboardInterrupt


def _raise_terminated(signum, frame):  # noqa: ARG001
    _received.append(signum)
    raise Terminated(signum)


def reraise_interrupt() -> None:
    """Raise the interrupt again when a signal arrived during this run (a library may have turned it into another
    error); loops that report an error and go on call it first."""
    if _received:
        signum = _received[-1]
        raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def install_signal_handlers() -> dict:
    """SIGINT raises KeyboardInterrupt (also where a shell started the process with SIGINT ignored), SIGTERM and
    SIGHUP raise :class:`Terminated`; main thread only. Returns the handlers replaced (for :func:`restore`)."""
    old: dict = {}
    try:
        for sig, handler in ((signal.SIGINT, _raise_interrupt), (signal.SIGTERM, _raise_terminated),
                             (signal.SIGHUP, _raise_terminated)):
            if sig == signal.SIGHUP and signal.getsignal(sig) is signal.SIG_IGN:  # nohup keeps it ignored
                continue
            old[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread (an embedding application): leave its handlers alone
        pass
    return old


def restore_signal_handlers(old: dict) -> None:
    for sig, handler in old.items():
        if handler is not None:
            signal.signal(sig, handler)


def error_code(exc: BaseException) -> int:
    """Exit code of an exception that ends a command (see the module docstring)."""
    if isinstance(exc, Terminated):
        return 128 + exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, MemoryError):
        return 1
    return int(getattr(exc, "exit_code", 2))


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None,
        prog: str | None = None) -> int:
    """Run a CLI body: bad input and OS errors become one line on stderr and exit code 2 (1 for resource failures),
    never a traceback; Ctrl-C / SIGTERM print ``<prog>: interrupted`` and exit 130 / 143."""
    prog = prog or (sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "em-noise")
    old = install_signal_handlers()
    try:
        code = _run(main, argv, prog)
    finally:
        restore_signal_handlers(old)  # a CLI called from Python leaves the caller's handlers as they were
    if code >= 128 and argv is None:  # a console script interrupted: outputs are cleaned, skip the slow teardown
        sys.stdout.flush()            # of the interpreter (seconds with torch loaded on a busy machine)
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None, prog: str) -> int:
    _received.clear()
    try:
        return int(main(argv) or 0)
    except Exception as exc:
        if not _received:
            return _failure(exc, prog)
        # a library turned the KeyboardInterrupt into another error (numpy's tofile does): still an interrupt
        signum = _received[-1]
        stop: KeyboardInterrupt = KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)
    except KeyboardInterrupt as interrupt:
        stop = interrupt
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the exit
    print(f"{prog}: {'terminated' if isinstance(stop, Terminated) else 'interrupted'}", file=sys.stderr)
    return error_code(stop)


def _failure(exc: Exception, prog: str) -> int:
    """One line for a failure; exceptions that are not the user's (bugs) keep their traceback."""
    try:
        raise exc
    except EMInputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return error_code(exc)
    except OSError as exc:
        err = as_output_error(exc, None, verb="")
        print(f"{prog}: error: {err}", file=sys.stderr)
        return err.exit_code
    except MemoryError:
        print(f"{prog}: error: out of memory; lower --tile-size (or --size/--bin for reconstructions)", file=sys.stderr)
        return 1


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the example block of the epilog as written and shows defaults."""


def add_version_arg(parser: argparse.ArgumentParser, prog: str, version: str) -> None:
    parser.add_argument("--version", action="version", version=f"{prog} {version}")


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run: auto uses CUDA when available, else the CPU")


def add_tiling_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile-size", type=int, default=512,
                        help="tile edge in px for tiled inference (lower it if memory runs out)")
    parser.add_argument("--tile-overlap", type=int, default=64, help="overlap between neighbouring tiles in px")


def add_output_args(parser: argparse.ArgumentParser, suffix: str) -> None:
    parser.add_argument("-o", "--output", metavar="DIR", default=None,
                        help="output directory (created if missing); default: next to each input as "
                             f"<stem>.{suffix}.<ext>")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
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
