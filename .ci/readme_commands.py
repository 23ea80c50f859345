"""Print the README's quick-start commands, one per line: the lines of the first ```bash block under
'## Quick start' after 'pip install uv'. `.ci/run` runs exactly these, first, on a clean clone."""
from __future__ import annotations

import sys
from pathlib import Path


def quick_start_commands(readme: str) -> list[str]:
    """Commands of the README's quick-start block that follow ``pip install uv`` (empty lines skipped)."""
    lines = readme.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().lower() == "## quick start")
        fence = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("```"))
        end = next(i for i in range(fence + 1, len(lines)) if lines[i].strip().startswith("```"))
    except StopIteration:
        raise SystemExit("README.md: no '## Quick start' section with a fenced code block") from None
    block = [line.strip() for line in lines[fence + 1:end] if line.strip() and not line.strip().startswith("#")]
    if "pip install uv" in block:
        block = block[block.index("pip install uv") + 1:]
    return block


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    commands = quick_start_commands((root / "README.md").read_text(encoding="utf-8"))
    if len(commands) != 2:
        sys.exit(f"README.md: the quick start must hold exactly two commands after 'pip install uv', found {commands}")
    print("\n".join(commands))
