"""How every command of the toolkit writes its outputs: as one set, through temp files, never over an input.

* **Temp files** live beside their final path, named ``.emtmp-<pid>-<token>-<name>`` (``<token>``: 8 hex digits
  shared by one set). They are removed on every exit path Python sees (errors, Ctrl-C, SIGTERM); what a
  ``kill -9`` leaves is swept by the next command writing to that folder: temp files whose process is gone, or
  older than the process now holding that pid.
* **A set**: inside ``with OutputSet(inputs=...)`` every :func:`em_noise.io.atomic_write` (so ``write_image``,
  ``write_text``, previews, CSV tables) goes to its temp file; when the block ends without an error, the set is
  committed: a commit record ``.emtmp-<pid>-<token>.commit`` (the temp -> final pairs) is written, the files are
  renamed in the order they were written (the report last), the record is removed. A run killed before the record
  leaves nothing (its temps are swept); one killed during the renames is completed by the next sweep of the folder
  (the set appears whole); Ctrl-C and SIGTERM wait until the renames are done. Either way no half set is left
  behind. A set lives in one folder (the record is in the folder of its first output).
* **Inputs are never outputs**: a planned output that is, or resolves to (links included), one of the command's
  inputs is refused with one line before any work, ``--overwrite`` or not (:func:`refuse_inputs`).
* **Exit codes** (:mod:`em_noise.cliutil`): an ``OSError`` becomes one line naming the path; exit code **1** when
  a resource ran out (no space left, disk quota, file too large, too many open files, out of memory: rerunning
  elsewhere or later can succeed), exit code **2** for an unusable path (permission denied, read-only file system,
  a file where a folder is needed, ...), as for bad input. ``Ctrl-C``: exit 130; ``SIGTERM``: 143.
"""
from __future__ import annotations

import contextvars
import errno
import json
import os
import re
import secrets
import signal
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from em_noise.errors import EMInputError

TEMP_PREFIX = ".emtmp-"
_TEMP_RE = re.compile(r"^\.emtmp-(\d+)-([0-9a-f]{8})(?:-(.+)|\.commit)$")
RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EMFILE, errno.ENFILE, errno.ENOMEM})
_active: contextvars.ContextVar[OutputSet | None] = contextvars.ContextVar("em_noise_output_set", default=None)
_swept: set[Path] = set()


class OutputError(EMInputError):
    """An output could not be written; ``exit_code`` 1 for resource failures (disk full, ...), else 2."""

    def __init__(self, path: str | Path | None, problem: str, exit_code: int = 2):
        super().__init__(path, problem)
        self.exit_code = exit_code


def exit_code_of(exc: OSError) -> int:
    """1 for resource failures (disk full, quota, file size limit, open files, memory), else 2."""
    return 1 if exc.errno in RESOURCE_ERRNOS or "requested and" in str(exc) else 2


def describe(exc: OSError) -> str:
    """One line for an OSError: its strerror (or message), without the path."""
    if exc.strerror:
        text = exc.strerror
    else:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "requested and" in text:  # short write (numpy / tifffile): the disk is full
            text = f"short write, no space left on device? ({text})"
    return " ".join(text.split())


def as_output_error(exc: OSError, path: str | Path | None, verb: str = "cannot write") -> OutputError:
    """``exc`` as one line naming ``path`` (or the path the OS reported)."""
    where = exc.filename if exc.filename is not None else path
    if where is not None and _TEMP_RE.match(Path(str(where)).name) and path is not None:
        where = path  # name the output, not its temp file
    return OutputError(where, f"{verb}: {describe(exc)}" if verb else describe(exc), exit_code_of(exc))


# ----------------------------------------------------------------------------------------------- inputs


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` are the same file (hard or symbolic links included)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def refuse_inputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path | None]) -> None:
    """Raise (one line, exit 2) when an output is one of the inputs, whatever ``--overwrite`` says."""
    ins = [Path(p) for p in inputs if p is not None]
    for out in outputs:
        for inp in ins:
            if same_file(out, inp):
                what = "the input file" if Path(out).resolve() == inp.resolve() else f"an input ({inp})"
                raise EMInputError(out, f"output would overwrite {what}; refusing (choose another -o)")


def check_output(path: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Raise unless ``path`` may be written: not an input, not a folder, an existing file only with ``overwrite``,
    its folder a folder (or creatable)."""
    path = Path(path)
    refuse_inputs([path], inputs)
    if path.parent.is_dir():
        _sweep_once(path.parent)  # a set a kill left half renamed is completed before it is judged
    if path.is_dir():
        raise EMInputError(path, "output is a directory")
    if path.exists() and not overwrite:
        raise EMInputError(path, "output exists (use --overwrite to replace it)")
    for parent in (path.parent, *path.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise EMInputError(parent, "output folder is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):  # refused before any work, not after it
                raise OutputError(parent, f"cannot write there: {_unwritable_reason(parent)}")
            break
    return path


def _unwritable_reason(folder: Path) -> str:
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return "permission denied"


def check_outputs(paths: Iterable[str | Path], *, overwrite: bool = False,
                  inputs: Iterable[str | Path | None] = ()) -> list[Path]:
    ins = list(inputs)
    return [check_output(p, overwrite=overwrite, inputs=ins) for p in paths]


# ----------------------------------------------------------------------------------------------- stale temps


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _process_start(pid: int) -> float | None:
    """Start time (epoch s) of ``pid`` from /proc (Linux), None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _stale(pid: int, mtime: float) -> bool:
    if pid == os.getpid():
        return False
    if not _pid_alive(pid):
        return True
    start = _process_start(pid)
    return start is not None and mtime < start - 1.0  # the pid was reused by a later process


def sweep(folder: str | Path) -> list[Path]:
    """Remove stale temp files of this pattern in ``folder`` and complete stale commits; returns what it removed or
    renamed into place. Errors (an unreadable folder) are ignored: the sweep only tidies."""
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    done: list[Path] = []
    commits = [e for e in entries if e.name.endswith(".commit") and _TEMP_RE.match(e.name)]
    for e in commits:  # roll forward a set killed while renaming
        pid = int(_TEMP_RE.match(e.name).group(1))
        try:
            if not _stale(pid, e.stat().st_mtime):
                continue
            pairs = json.loads(Path(e.path).read_text(encoding="utf-8"))
            for tmp, final in pairs:
                if Path(tmp).exists():
                    os.replace(tmp, final)
                    done.append(Path(final))
            os.unlink(e.path)
        except (OSError, ValueError, TypeError):
            continue
    for e in entries:
        m = _TEMP_RE.match(e.name)
        if not m or e.name.endswith(".commit"):
            continue
        try:
            if _stale(int(m.group(1)), e.stat(follow_symlinks=False).st_mtime):
                os.unlink(e.path)
                done.append(Path(e.path))
        except OSError:
            continue
    return done


def _sweep_once(folder: Path) -> None:
    key = folder.resolve()
    if key not in _swept:
        _swept.add(key)
        sweep(folder)


# ----------------------------------------------------------------------------------------------- the set


class OutputSet:
    """The outputs of one command (or of one input of a many-inputs command), written as a set.

    ``inputs``: the command's input files (never written); ``overwrite``: existing outputs may be replaced.
    Use as a context manager; :func:`atomic_write` inside it stages into the set. ``commit()`` is called when the
    block ends without an exception, ``abort()`` (temps removed, folders it created removed) otherwise.
    """

    def __init__(self, inputs: Iterable[str | Path | None] = (), overwrite: bool = False):
        self.inputs = [Path(p) for p in inputs if p is not None]
        self.overwrite = overwrite
        self.token = secrets.token_hex(4)
        self.staged: list[tuple[Path, Path]] = []  # (temp, final) in write order
        self.created: list[Path] = []  # folders made for the outputs, deepest last
        self._reset: contextvars.Token | None = None

    def __enter__(self) -> OutputSet:
        self._reset = _active.set(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._reset is not None:
            _active.reset(self._reset)
            self._reset = None
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def temp_path(self, final: Path) -> Path:
        return final.parent / f"{TEMP_PREFIX}{os.getpid()}-{self.token}-{final.name}"

    def _make_folder(self, folder: Path) -> None:
        missing = []
        for p in (folder, *folder.parents):
            if p.exists():
                break
            missing.append(p)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise as_output_error(exc, folder) from None
        self.created.extend(reversed(missing))

    def stage(self, path: str | Path, write: Callable[[Path], None], *, overwrite: bool | None = None,
              inputs: Sequence[str | Path | None] = ()) -> Path:
        """Check ``path``, call ``write(temp)`` on its temp file; the file appears at ``path`` on commit."""
        final = Path(path)
        if any(final == f or same_file(final, f) for _, f in self.staged):
            raise EMInputError(final, "written twice by one command")
        check_output(final, overwrite=self.overwrite if overwrite is None else (overwrite or self.overwrite),
                     inputs=[*self.inputs, *inputs])
        self._make_folder(final.parent)
        tmp = self.temp_path(final)
        try:
            self.staged.append((tmp, final))  # first: abort() removes it whenever an interrupt lands
            write(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # the mode a plain open() would give
        except OSError as exc:
            self.staged.remove((tmp, final))
            tmp.unlink(missing_ok=True)
            raise as_output_error(exc, final) from None
        return final

    def commit(self) -> list[Path]:
        """Rename every staged file into place, in write order, under a commit record a sweep can complete."""
        if not self.staged:
            return []
        record = self.staged[0][1].parent / f"{TEMP_PREFIX}{os.getpid()}-{self.token}.commit"
        pairs = [[str(t.resolve()), str(f.resolve())] for t, f in self.staged]
        renamed: list[Path] = []
        part = self.temp_path(record.with_name("commit-record"))  # a temp file itself until renamed
        blocked = _block_signals()  # Ctrl-C / SIGTERM wait until the set is whole (a kill -9: see sweep)
        try:
            if len(self.staged) > 1:
                part.write_text(json.dumps(pairs), encoding="utf-8")
                os.replace(part, record)
            for tmp, final in self.staged:
                os.replace(tmp, final)
                renamed.append(final)
        except OSError as exc:
            failed = self.staged[len(renamed)][1]
            for final in renamed:  # roll back: no half set
                final.unlink(missing_ok=True)
            self.abort()
            for p in (part, record):
                p.unlink(missing_ok=True)
            raise as_output_error(exc, failed) from None
        else:
            done = [f for _, f in self.staged]
            self.staged = []
            try:
                record.unlink(missing_ok=True)
            except OSError:
                pass  # the set is whole; a sweep removes the record
        finally:
            _unblock_signals(blocked)
        return done

    def abort(self) -> None:
        """Remove every temp file of the set and the folders made for it (when empty)."""
        for tmp, _ in self.staged:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        self.staged = []
        for folder in reversed(self.created):
            try:
                folder.rmdir()
            except OSError:
                pass
        self.created = []


_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _block_signals() -> set | None:
    try:
        return signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    except (AttributeError, ValueError, OSError):  # no pthread_sigmask on this platform
        return None


def _unblock_signals(old: set | None) -> None:
    if old is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def active() -> OutputSet | None:
    """The set being written in this context, if any."""
    return _active.get()


def atomic_write(path: str | Path, write: Callable[[Path], None], *, overwrite: bool = False,
                 inputs: Sequence[str | Path | None] = ()) -> Path:
    """Write one output through ``write(temp)``: into the active set, else as a set of one file."""
    current = active()
    if current is not None:
        return current.stage(path, write, overwrite=overwrite, inputs=inputs)
    with OutputSet(overwrite=overwrite) as single:
        single.stage(path, write, inputs=inputs)
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


__all__ = ["OutputError", "OutputSet", "TEMP_PREFIX", "active", "as_output_error", "atomic_write", "check_output",
           "check_outputs", "exit_code_of", "refuse_inputs", "same_file", "sweep"]
