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
    _replace(path, new)


def machine() -> str:
    """``"x86_64 AMD EPYC"``: the architecture and the CPU's model name (``/proc/cpuinfo``; the architecture alone
    where there is none), so that figures taken on different hosts are not read as one machine's."""
    import platform

    arch = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return f"{arch} {' '.join(line.split(':', 1)[1].split())}"
    except OSError:
        pass
    return arch


def stamp() -> str:
    """``"x86_64 AMD EPYC, 2026-12-03 08:00 UTC, load average 1.3"``: the machine (:func:`machine`), the time and
    the load of a run."""
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{machine()}, {now}, load average {load:.1f}"


def byte_compile_package() -> None:
    """Byte-compile idtfv's modules as ``pip install`` does, before whole-process runs are timed.

    A wheel installed by pip carries ``.pyc`` files, and an editable install writes them on its first run, unless
    ``PYTHONDONTWRITEBYTECODE`` is set (as in some development shells): then every timed process would compile
    every idtfv module from source again (~0.04 s of CPU per extraction here), a cost no user's installed tool pays.
    """
    import compileall
    import importlib.util

    for name in ("idtfv", "idtfv.idt", "idtfv.encoding", "idtfv.classify", "idtfv.deep"):
        spec = importlib.util.find_spec(name)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(folder, quiet=1)


def publish(section: str, text: str, *, write: bool) -> None:
    """Print ``text`` (``write=False``, a script's ``--no-write``) or make it section ``section`` of RESULTS.md and
    say so."""
    if not write:
        print(text)
        return
    write_section(section, text)
    print(f"updated {section} of bench/RESULTS.md")


def write_block(section: str, block: str, text: str, *, path: Path = RESULTS) -> None:
    """Replace (or append) the block ``<!-- begin block -->...<!-- end block -->`` inside section ``section``.

    For sections that several scripts share (``## encoding``: bench_gmm and bench_fisher each own one block).
    """
    begin, end = f"<!-- begin {block} -->", f"<!-- end {block} -->"
    body = f"{begin}\n{text.rstrip()}\n{end}\n"
    doc = path.read_text() if path.exists() else _HEADER
    if section + "\n" not in doc:
        doc = doc.rstrip() + f"\n\n{section}\n\n"
    start = doc.index(section + "\n")
    nxt = doc.find("\n## ", start + len(section))
    stop = len(doc) if nxt < 0 else nxt + 1
    part = doc[start:stop]
    if begin in part:
        part = part[:part.index(begin)] + body + part[part.index(end) + len(end) + 1:]
    else:
        part = part.rstrip() + "\n\n" + body
    _replace(path, doc[:start] + part.rstrip() + "\n" + ("\n" + doc[stop:] if stop < len(doc) else ""))


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file + rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def readme_row(table: str, key: str, cells) -> str:
    """A RESULTS.md table row marked for README table ``table`` (see ``bench/readme.py``): ``| <!-- readme:TABLE:KEY
    --> cell | cell | ... |`` (the marker is invisible where the Markdown is rendered). Put it in a table of the
    section text you write."""
    return f"| <!-- readme:{table}:{key} --> " + " | ".join(str(c) for c in cells) + " |"


#: A run counts as disturbed when a fixed workload's time varies by more than this share of its median between
#: the rounds (the machine's noise: the work itself does not change).
QUIET = 0.05


def spread(values) -> float:
    """``(max - min) / median`` of a fixed workload's times over the rounds of a run."""
    import statistics

    return (max(values) - min(values)) / statistics.median(values)


def uncertain(noise: dict[str, float]) -> str:
    """``" (a disturbed run: uncertain)"`` for a goal's verdict read from a run that :func:`noise_lines` calls
    disturbed, else ``""``: the README copies the verdict without the noise line."""
    return " (a disturbed run: uncertain)" if noise and max(noise.values()) > QUIET else ""


def noise_lines(noise: dict[str, float], measured_by: str) -> list[str]:
    """A section's line on the machine's noise during its run: ``noise`` maps each case to the :func:`spread` of a
    fixed workload's times (``measured_by`` names it: the reference's own CPU time, one thread's run); over
    :data:`QUIET` the run is called disturbed."""
    if not noise:
        return []
    case, worst = max(noise.items(), key=lambda item: item[1])
    text = (f"Machine noise: {measured_by} varied by up to {100 * worst:.1f} % of its median between rounds "
            f"({case}; " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in noise.items()) + ").")
    if worst > QUIET:
        text += (f" Over {100 * QUIET:g} %: a disturbed run; its ratios' ranges are wide, and a goal read from it "
                 "is uncertain: rerun on a quiet machine.")
    return [text, ""]
