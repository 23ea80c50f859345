"""Checking the command-line tools' promises on bad input and faults (the test suite and ``benchmarks/faults.py``).

* :func:`run_cli` runs a console script in a subprocess (its own session) and always kills what is left of it;
  ``fsize`` caps the size of any file it writes (``RLIMIT_FSIZE``, SIGXFSZ ignored: writes fail with EFBIG, as on
  a full disk).
* :func:`interrupt` sends a signal once a condition holds (a temp file appeared, a delay passed) and times the exit.
* :func:`read_only` makes a folder read-only for real: ``chmod`` for a normal user; for root (whom ``chmod`` does
  not stop) a read-only tmpfs mounted over it holding a copy of its files, where mounting is allowed.
* :func:`snapshot` / :func:`temp_files`: the files of a folder (size and SHA-1) and the temp files left in it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from em_noise.outputs import TEMP_PREFIX


@dataclass
class Result:
    """What a command did: exit code, output, seconds (from the signal when :func:`interrupt` sent one)."""

    code: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def one_line(self, *needles: str) -> bool:
        """Exactly one stderr line, no traceback, containing every needle."""
        return (len(self.lines) == 1 and "Traceback" not in self.stderr
                and all(n in self.lines[0] for n in needles))


def script(name: str) -> str:
    """Path of a console script of this environment (beside the Python running this)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def quiet_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child command: one thread, no warnings on stderr, no GPU."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "MPLBACKEND": "Agg", "CUDA_VISIBLE_DEVICES": "", "TQDM_DISABLE": "1"}
    return {**env, **(extra or {})}


def _preexec(fsize: int | None) -> Callable[[], None] | None:
    if fsize is None:
        return None

    def limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return limit


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
        pass


def _start(cmd: Sequence[str], cwd: str | Path | None, fsize: int | None, env: dict | None) -> subprocess.Popen:
    return subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=quiet_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_preexec(fsize))


def _wait(proc: subprocess.Popen, timeout: float, t0: float) -> Result:
    """Wait ``timeout`` s for ``proc`` to end (killed then, code None); seconds counted from ``t0``."""
    try:
        out, err = proc.communicate(timeout=timeout)
        return Result(proc.returncode, out, err, time.monotonic() - t0)
    except subprocess.TimeoutExpired:
        _kill(proc)
        out, err = proc.communicate()
        return Result(None, out, err, time.monotonic() - t0)


def run_cli(cmd: Sequence[str], *, timeout: float = 120, cwd: str | Path | None = None, fsize: int | None = None,
            env: dict[str, str] | None = None) -> Result:
    """Run ``cmd`` to its end (killed after ``timeout`` s, code None then); the child is always reaped."""
    t0 = time.monotonic()
    proc = _start(cmd, cwd, fsize, env)
    try:
        return _wait(proc, timeout, t0)
    finally:
        _kill(proc)


def has_loaded(pid: int, library: str = "libtorch_cpu") -> bool:
    """True once process ``pid`` has mapped ``library`` (Linux /proc; False where unknown)."""
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def interrupt(cmd: Sequence[str], *, when: Callable[[int], bool] | float, sig: int = signal.SIGINT,
              timeout: float = 10.0, give_up: float = 120.0, cwd: str | Path | None = None,
              env: dict[str, str] | None = None) -> Result:
    """Start ``cmd``, send ``sig`` once ``when(pid)`` is true (or after ``when`` seconds), wait ``timeout`` s for the
    exit (code None if it did not end). ``seconds``: from the signal to the exit; the signal is sent at the latest
    after ``give_up`` s, and not at all (code: its own) if the command ended first."""
    proc = _start(cmd, cwd, None, env)
    try:
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < give_up:
            if (when(proc.pid) if callable(when) else time.monotonic() - t0 >= when):
                break
            time.sleep(0.005)
        if proc.poll() is not None:
            out, err = proc.communicate()
            return Result(proc.returncode, out, err, 0.0)
        t1 = time.monotonic()
        proc.send_signal(sig)
        return _wait(proc, timeout, t1)
    finally:
        _kill(proc)


def exit_code(res: Result) -> int | None:
    """The exit code as a shell reports it: 128 + N for a process killed by signal N."""
    return None if res.code is None else (128 - res.code if res.code < 0 else res.code)


def temp_files(folder: str | Path) -> list[Path]:
    """Temp files of the toolkit's pattern under ``folder``."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob(f"{TEMP_PREFIX}*")) if folder.exists() else []


def snapshot(folder: str | Path) -> dict[str, tuple[int, str]]:
    """Relative path -> (size, SHA-1) of every file under ``folder``."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(folder))] = (p.stat().st_size, hashlib.sha1(p.read_bytes()).hexdigest())
    return out


def can_make_read_only() -> bool:
    """True where :func:`read_only` works (a normal user, or root allowed to mount a tmpfs)."""
    if os.geteuid() != 0:
        return True
    return shutil.which("mount") is not None and _mount_allowed()


_MOUNT_OK: bool | None = None


def _mount_allowed() -> bool:
    global _MOUNT_OK
    if _MOUNT_OK is None:
        import tempfile

        probe = Path(tempfile.mkdtemp(prefix="emro-"))
        try:
            ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                                capture_output=True).returncode == 0
            if ok:
                subprocess.run(["umount", str(probe)], capture_output=True)
            _MOUNT_OK = ok
        finally:
            shutil.rmtree(probe, ignore_errors=True)
    return _MOUNT_OK


@contextmanager
def read_only(folder: str | Path) -> Iterator[Path]:
    """``folder`` (which must exist) read-only for the duration, files kept: writes there fail with EACCES/EROFS."""
    folder = Path(folder)
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(mode)
        return
    saved = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)], check=True,
                   capture_output=True)
    try:
        for name, data in saved.items():
            (folder / name).write_bytes(data)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
