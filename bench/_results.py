"""Write one benchmark's section of ``bench/RESULTS.md`` (shared by every ``bench_*.py`` script).

Each script owns one ``## name`` section; re-running it replaces that section in place (or appends it) and leaves
the others untouched. The file is replaced atomically so two scripts never leave it half-written.
"""

from __future__ import annotations

import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
_HEADER = "# Benchmark results\n"


def write_section(section: str, text: str, *, path: Path = RESULTS) -> None:
    """Replace the block that starts with the heading line ``section`` (up to the next ``## ``) by ``text``.

    Parameters
    ----------
    section : str
        The heading line, e.g. ``"## tvl1"``; ``text`` should start with it.
    text : str
        The whole new section.
    path : Path
        The results file (created with a title if absent).
    """
    old = path.read_text() if path.exists() else _HEADER
    body = text.rstrip("\n") + "\n"
    start = old.find(section + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + body
    else:
        end = old.find("\n## ", start + len(section))
        new = old[:start] + body + ("\n" + old[end + 1:] if end >= 0 else "")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
