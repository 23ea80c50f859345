"""Faults during a command (em_noise.outputs): full disk, kill -9 at any moment, Ctrl-C / SIGTERM, stale temp files.

The commands run as subprocesses (em_noise.testing: always killed and reaped) on tiny inputs.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from em_noise.errors import EMInputError
from em_noise.outputs import TEMP_PREFIX, OutputSet, atomic_write, sweep
from em_noise.synth import sample_paths
from em_noise.testing import interrupt, run_cli, script, snapshot, temp_files

SYNTH = [script("em-noise"), "synth", "--mode", "haadf", "--size", "48"]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_full_disk_is_one_line_exit_1_and_leaves_nothing(tmp_path):
    res = run_cli([*SYNTH, "--count", "2", "-o", tmp_path / "o"], fsize=4_000, timeout=120)
    assert res.code == 1, res.stderr
    assert res.one_line("o/0000_noisy.tif"), res.stderr
    assert "space" in res.stderr and not (tmp_path / "o").exists() and temp_files(tmp_path) == []


def test_kill_9_mid_write_then_rerun_completes_without_overwrite(tmp_path):
    out = tmp_path / "o"
    res = interrupt([*SYNTH, "--count", "12", "-o", out], when=lambda pid: bool(temp_files(out)),
                    sig=signal.SIGKILL)
    assert res.code == -signal.SIGKILL
    left = [p for p in out.iterdir()] if out.exists() else []
    assert all(p.name.startswith(TEMP_PREFIX) for p in left)  # nothing final: a set appears whole or not at all
    rerun = run_cli([*SYNTH, "--count", "12", "-o", out])
    assert rerun.code == 0, rerun.stderr
    assert temp_files(out) == []  # the dead run's temps were swept
    assert sorted(out.iterdir()) == sorted(sample_paths(out, 12))


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_stops_within_2_s_with_one_line_and_no_output(tmp_path, sig, code, word):
    out = tmp_path / "o"
    res = interrupt([*SYNTH, "--count", "200", "-o", out], when=lambda pid: bool(temp_files(out)), sig=sig)
    assert res.code == code and res.seconds < 2.0, (res.code, res.seconds, res.stderr)
    assert res.one_line(word), res.stderr
    assert not out.exists() and temp_files(tmp_path) == []


def test_stale_temps_are_swept_and_live_ones_kept(tmp_path):
    dead = tmp_path / f"{TEMP_PREFIX}{_dead_pid()}-0123abcd-a.tif"
    dead.write_bytes(b"half")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.1)
        mine = tmp_path / f"{TEMP_PREFIX}{live.pid}-89abcdef-b.tif"  # newer than its live owner: in use
        mine.write_bytes(b"writing")
        reused = tmp_path / f"{TEMP_PREFIX}{live.pid}-fedcba98-c.tif"  # older than the process holding that pid
        reused.write_bytes(b"old")
        os.utime(reused, (time.time() - 3600, time.time() - 3600))
        other = tmp_path / ".emtmpx-1-zz-d.tif"  # not the pattern
        other.write_bytes(b"x")
        removed = sweep(tmp_path)
        assert sorted(removed) == sorted([dead, reused])
        assert mine.exists() and other.exists() and not dead.exists() and not reused.exists()
    finally:
        live.kill()
        live.wait()


def test_a_set_killed_while_renaming_is_completed_by_the_next_sweep(tmp_path):
    pid, token = _dead_pid(), "0a0b0c0d"
    finals = [tmp_path / n for n in ("v.mrc", "v.reproj.mrc", "v.json")]
    temps = [tmp_path / f"{TEMP_PREFIX}{pid}-{token}-{f.name}" for f in finals]
    for t in temps:
        t.write_text(t.name)
    (tmp_path / f"{TEMP_PREFIX}{pid}-{token}.commit").write_text(json.dumps([[str(t), str(f)] for t, f in
                                                                              zip(temps, finals)]))
    os.replace(temps[0], finals[0])  # killed after the first rename
    sweep(tmp_path)
    assert sorted(tmp_path.iterdir()) == sorted(finals)
    assert finals[2].read_text() == temps[2].name


def test_a_set_appears_at_the_end_or_not_at_all(tmp_path):
    a, b = tmp_path / "sub" / "a.txt", tmp_path / "sub" / "b.txt"
    with pytest.raises(RuntimeError), OutputSet():
        atomic_write(a, lambda t: t.write_text("a"))
        assert not a.exists() and len(temp_files(tmp_path)) == 1
        raise RuntimeError("fails before the end")
    assert snapshot(tmp_path) == {} and not (tmp_path / "sub").exists()  # the folder it made is gone too
    with OutputSet() as out:
        atomic_write(a, lambda t: t.write_text("a"))
        atomic_write(b, lambda t: t.write_text("b"))
        assert not a.exists() and not b.exists()
    assert out.staged == [] and a.read_text() == "a" and b.read_text() == "b" and temp_files(tmp_path) == []


def test_outputs_onto_inputs_are_refused_through_links(tmp_path):
    src = tmp_path / "in.tif"
    src.write_bytes(b"data")
    (tmp_path / "link.tif").symlink_to(src)
    os.link(src, tmp_path / "hard.tif")
    for target in ("in.tif", "link.tif", "hard.tif"):
        with pytest.raises(EMInputError, match="input"), OutputSet(inputs=[src], overwrite=True):
            atomic_write(tmp_path / target, lambda t: t.write_bytes(b"new"))
    assert src.read_bytes() == b"data" and temp_files(tmp_path) == []


def test_an_os_error_while_writing_names_the_output_not_the_temp(tmp_path):
    from em_noise.outputs import OutputError

    def fail(tmp):
        raise OSError(28, "No space left on device", str(tmp))

    with pytest.raises(OutputError) as err:
        atomic_write(tmp_path / "x.tif", fail)
    assert err.value.exit_code == 1 and str(err.value).startswith(str(tmp_path / "x.tif"))
    assert "No space left" in str(err.value) and temp_files(tmp_path) == []
    np.testing.assert_equal(snapshot(tmp_path), {})


@pytest.mark.parametrize("err, code", [
    (OSError(28, "No space left on device", "/d/x.tif"), 1), (OSError(122, "Disk quota exceeded", "/d/x"), 1),
    (OSError(27, "File too large", "/d/x"), 1), (OSError(24, "Too many open files", "/d/x"), 1),
    (OSError("65536 requested and 25512 written"), 1), (PermissionError(13, "Permission denied", "/d/x"), 2),
    (OSError(30, "Read-only file system", "/d/x"), 2), (NotADirectoryError(20, "Not a directory", "/d/x"), 2),
    (FileExistsError(17, "File exists", "/d/x"), 2),
])
def test_an_os_error_anywhere_is_one_line_with_its_exit_code(capsys, err, code):
    from em_noise.cliutil import run

    def body(argv):
        raise err

    assert run(body, [], prog="tool") == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tool: error: ") and "Traceback" not in lines[0]
    assert ("/d/x" in lines[0]) == (err.filename is not None)


def test_interrupts_give_130_and_143(capsys):
    from em_noise.cliutil import Terminated, run

    def ctrl_c(argv):
        raise KeyboardInterrupt

    def term(argv):
        raise Terminated(signal.SIGTERM)

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)  # SIG_IGN under `nohup ... &`
    assert run(ctrl_c, [], prog="tool") == 130 and capsys.readouterr().err == "tool: interrupted\n"
    assert run(term, [], prog="tool") == 143 and capsys.readouterr().err == "tool: terminated\n"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # the caller's are back


def test_an_interrupt_a_library_turned_into_another_error_is_still_an_interrupt(capsys):
    """numpy's tofile turns a Ctrl-C during a write into a TypeError: the CLI must still stop as interrupted."""
    from em_noise.cliutil import run

    def body(argv):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            raise TypeError("expected str, bytes or os.PathLike object, not BufferedWriter") from None

    assert run(body, [], prog="tool") == 130 and capsys.readouterr().err == "tool: interrupted\n"
