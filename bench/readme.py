"""Rewrite README.md's result tables from ``bench/RESULTS.md``; no figure in them is typed by hand.

A benchmark script marks each row that the README shows by starting the row's first cell, inside its own section
of RESULTS.md, with ``<!-- readme:TABLE:KEY -->`` (see :func:`_results.readme_row`). README.md
holds, for each table of :data:`TABLES`, a block ``<!-- begin generated:TABLE -->`` ... ``<!-- end
generated:TABLE -->``; this script replaces the block's contents by the table's header and its rows, in the order
:data:`TABLES` gives, taken verbatim from RESULTS.md. A row that RESULTS.md does not have is left out (the
benchmark that measures it has not been run); the list of missing rows is printed.

Usage::

    python bench/readme.py            # rewrite README.md
    python bench/readme.py --check    # exit 1 (and say which table) if README.md is not what RESULTS.md gives
    python bench/readme.py --goals    # rewrite it, and print every figure that has a goal next to the goal

``make bench`` runs it after the benchmarks; ``tests/test_readme_figures.py`` runs ``--check``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
README = HERE.parent / "README.md"

#: README tables: name -> (header lines, row keys in display order).
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "accuracy": (  # bench/bench_demo.py
        ("| pipeline | accuracy | mAP | correct clips |", "|---|---|---|---|"),
        ("svm", "svm-pyramid", "knn", "tsn-rgbdiff", "fuse-svm-tsn"),
    ),
    "fidelity": (  # bench/bench_reference.py
        ("| clip | count ratio | Traj | HOG | HOF | MBHx | MBHy |", "|---|---|---|---|---|---|---|"),
        ("vtest200", "kth", "tree", "carphone"),
    ),
    "speed": (  # bench/bench_reference.py, bench/bench_startup.py, ...
        ("| what | ours | baseline | ratio |", "|---|---|---|---|"),
        ("idt-vtest-default", "idt-vtest-fast", "idt-vtest200-default", "idt-vtest200-fast", "idt-kth-default",
         "idt-kth-fast", "startup-help", "startup-first-frame", "startup-extract", "output-lear", "threads",
         "threads-long", "memory", "fv-d48", "fv-d213", "fv-d48-random", "fv-d213-random", "tvl1-default", "tvl1-fast", "encode-stage"),
    ),
    "gpu": (  # bench/gpu_bench.py (run on a lent GPU by bench/gpu_check.sh)
        ("| what | measured | target |", "|---|---|---|"),
        ("one-stream", "one-stream-fast", "batch", "ucf101", "batch-fast", "cpu-batch", "parity"),
    ),
    "detection": (  # bench/bench_detect.py
        ("| videos | IoU 0.1 | 0.2 | 0.3 | 0.4 | 0.5 | average (95% CI) |", "|---|---|---|---|---|---|---|"),
        ("default-untrimmed", "long-video"),
    ),
    "detection-cost": (  # bench/bench_detect.py
        ("| video | feature extraction | detection | detection / extraction |", "|---|---|---|---|"),
        ("default-untrimmed", "long-video"),
    ),
}

_ROW_MARK = re.compile(r"^(\| <!-- readme:([\w-]+):([\w-]+) -->.*\|)[ \t]*$", re.M)


def rows_from_results(text: str) -> dict[tuple[str, str], str]:
    """``{(table, key): row}`` of every marked row in RESULTS.md text; a key given twice is an error."""
    rows: dict[tuple[str, str], str] = {}
    for match in _ROW_MARK.finditer(text):
        key = (match.group(2), match.group(3))
        if key in rows:
            raise SystemExit(f"error: {RESULTS}: readme row {key[0]}:{key[1]} appears twice; one bench owns each row")
        rows[key] = match.group(1).rstrip()
    return rows


def render(readme: str, rows: dict[tuple[str, str], str]) -> tuple[str, list[str]]:
    """README text with every generated block rewritten; also the ``TABLE:KEY`` rows that RESULTS.md lacks."""
    missing = []
    for table, (header, keys) in TABLES.items():
        begin, end = f"<!-- begin generated:{table} -->", f"<!-- end generated:{table} -->"
        if begin not in readme or end not in readme:
            raise SystemExit(f"error: {README}: no '{begin}' ... '{end}' block; add one where the table goes")
        body = list(header)
        for key in keys:
            if (table, key) in rows:
                body.append(rows[(table, key)])
            else:
                missing.append(f"{table}:{key}")
        start = readme.index(begin) + len(begin)
        stop = readme.index(end)
        readme = readme[:start] + "\n" + "\n".join(body) + "\n" + readme[stop:]
    return readme, missing


def goal_lines(rows: dict[tuple[str, str], str]) -> list[str]:
    """One line per speed or GPU row that states a goal (``goal``, ``target``): what, ours, and the goal with the
    ratio or verdict, in the README's order; the figures as RESULTS.md has them."""
    lines = []
    for table in ("speed", "gpu"):
        for key in TABLES[table][1]:
            row = rows.get((table, key))
            if row is None:
                continue
            cells = [c.strip() for c in re.sub(r"<!--.*?-->", "", row).strip().strip("|").split("|")]
            if table == "gpu" or any("goal" in c for c in cells[1:]):
                lines.append(f"- {cells[0]}: " + " | ".join(cells[1:]))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    parser.add_argument("--goals", action="store_true",
                        help="also print every figure that has a goal next to it (what make bench ends with)")
    args = parser.parse_args(argv)
    old = README.read_text()
    rows = rows_from_results(RESULTS.read_text())
    if args.goals:
        print("Figures and their goals (bench/RESULTS.md):")
        print("\n".join(goal_lines(rows)))
    new, missing = render(old, rows)
    if missing:
        print(f"readme: rows not in RESULTS.md yet (run their benchmark): {', '.join(missing)}", file=sys.stderr)
    if args.check:
        if new != old:
            print(f"error: {README} tables differ from {RESULTS}; run python bench/readme.py", file=sys.stderr)
            return 1
        return 0
    if new != old:
        README.write_text(new)
        print(f"readme: rewrote the generated tables of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
