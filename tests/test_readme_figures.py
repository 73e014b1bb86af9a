"""README.md's result figures come from bench/RESULTS.md (written by the benchmarks), never from hand edits."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import readme  # noqa: E402  (bench/readme.py)


def _results_section(text: str) -> str:
    start = text.index("\n## Results")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def test_generated_tables_are_what_results_md_gives():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "readme.py"), "--check"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_every_figure_in_the_readme_result_tables_appears_in_results_md():
    results = (REPO / "bench" / "RESULTS.md").read_text()
    section = _results_section((REPO / "README.md").read_text())
    rows = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")]
    assert rows, "the README's Results section has no tables"
    missing = []
    for row in rows:
        for number in re.findall(r"(?<![\w.])\d+(?:[.,]\d+)*(?:\.\d+)?", row):
            if number not in results:
                missing.append(f"{number!r} in {row[:80]!r}")
    assert not missing, "README figures not in bench/RESULTS.md:\n" + "\n".join(missing)


def test_render_takes_rows_verbatim_in_table_order_and_reports_missing_ones():
    results = "\n".join([
        "## a", "", "| <!-- readme:accuracy:knn --> k-NN | 50.0% | 60.0% | 16 / 32 |", "| unmarked | 1 | 2 | 3 |",
        "## b", "| <!-- readme:accuracy:svm --> SVM | 81.2% | 88.9% | 26 / 32 |",
    ])
    rows = readme.rows_from_results(results)
    doc = "x\n" + "".join(f"<!-- begin generated:{t} -->\nstale\n<!-- end generated:{t} -->\n"
                          for t in readme.TABLES) + "y\n"
    new, missing = readme.render(doc, rows)
    body = new.split("<!-- begin generated:accuracy -->\n")[1].split("<!-- end generated:accuracy -->")[0]
    lines = body.strip().splitlines()
    assert lines[2:] == ["| <!-- readme:accuracy:svm --> SVM | 81.2% | 88.9% | 26 / 32 |",
                         "| <!-- readme:accuracy:knn --> k-NN | 50.0% | 60.0% | 16 / 32 |"]
    assert "stale" not in new and new.startswith("x\n") and new.endswith("y\n")
    assert "accuracy:svm-pyramid" in missing and not {"accuracy:svm", "accuracy:knn"} & set(missing)
    assert len(missing) == sum(len(keys) for _, keys in readme.TABLES.values()) - 2
    with pytest.raises(SystemExit, match="twice"):
        readme.rows_from_results(results + "\n| <!-- readme:accuracy:svm --> again | 1 | 2 | 3 |")


def test_make_bench_ends_with_every_figure_that_has_a_goal_next_to_it():
    """``make bench`` ends with ``readme.py --goals``: every speed row whose cells name a goal, and every GPU row
    (each has a target), one line each, with the goal and the ratio or verdict as RESULTS.md gives them."""
    rows = {
        ("speed", "threads"): "| <!-- readme:speed:threads --> `--threads 2` vs 1 | 1.91x | goal 1.8x | met |",
        ("speed", "startup-extract"): "| <!-- readme:speed:startup-extract --> a 20-frame clip | 0.74 s | - | - |",
        ("speed", "fv-d48"): "| <!-- readme:speed:fv-d48 --> FV D=48 | 0.84 M/s | VLFeat 0.17 M/s | 4.80x; goal 8x |",
        ("gpu", "batch"): "| <!-- readme:gpu:batch --> batch | **143 frames/s** | >= 2,000 frames/s |",
        ("detection", "long-video"): "| <!-- readme:detection:long-video --> one video | 100.0% | goal? |",
    }
    assert readme.goal_lines(rows) == [
        "- `--threads 2` vs 1: 1.91x | goal 1.8x | met",
        "- FV D=48: 0.84 M/s | VLFeat 0.17 M/s | 4.80x; goal 8x",
        "- batch: **143 frames/s** | >= 2,000 frames/s",
    ]
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "readme.py"), "--check", "--goals"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "goal 1.8x" in proc.stdout and "goal 3x" in proc.stdout, proc.stdout


def test_benches_state_the_machines_noise_from_a_fixed_workloads_spread():
    """bench_reference and bench_threads state the machine's noise by a fixed workload's spread over the rounds
    (the reference's own CPU time; the one-thread runs'): planted spreads give their percentages, and only a spread
    over 5 % calls the run disturbed."""
    import _results

    assert _results.spread([20.0, 21.0, 22.0]) == pytest.approx(0.095238, rel=1e-5)
    quiet = " ".join(_results.noise_lines({"vtest": 0.018, "KTH": 0.012}, "the reference's own CPU time"))
    assert "the reference's own CPU time varied by up to 1.8 % of its median" in quiet
    assert "(vtest;" in quiet and "KTH 1.2 %" in quiet and "disturbed" not in quiet
    loud = " ".join(_results.noise_lines({"vtest": 0.02, "whole vtest": 0.11}, "x"))
    assert "up to 11.0 %" in loud and "(whole vtest;" in loud and "a disturbed run" in loud
    assert _results.noise_lines({}, "x") == []
