"""The README's quick start is what CI runs: `.ci/run` reads the commands from the README, so they cannot drift."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _extractor():
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / ".ci" / "readme_commands.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_quick_start_has_the_two_commands_ci_runs():
    out = subprocess.run([sys.executable, str(ROOT / ".ci" / "readme_commands.py")], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert len(out) == 2
    assert out[0].startswith("uv run ") and "examples/" in out[0]
    assert out[1].startswith("uv run pytest")


def test_ci_runs_the_readme_commands_first():
    body = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]
    readme = next(i for i, line in enumerate(body) if "readme_commands.py" in line)
    runs = next(i for i, line in enumerate(body) if 'bash -c "$cmd"' in line)
    other_uv = [i for i, line in enumerate(body) if "uv run" in line or "uv sync" in line or "uv lock" in line]
    assert readme < runs < min(other_uv), "the README's commands must run first, with no uv command before them"


def test_extractor_follows_an_edited_readme():
    mod = _extractor()
    readme = "# x\n\n## Quick start\n\n```bash\npip install uv\nuv run foo examples/a.tif\nuv run pytest -q\n```\n"
    assert mod.quick_start_commands(readme) == ["uv run foo examples/a.tif", "uv run pytest -q"]


def test_root_project_depends_on_every_member():
    import tomllib

    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = " ".join(root["project"]["dependencies"])
    for member in sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file()):
        assert member in deps, f"root project does not depend on workspace member {member}"
