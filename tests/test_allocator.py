"""``idtfv.allocator.keep_freed_memory``: freed frame-sized arrays are reused instead of faulted in again.

The check is the invariant the change is for, counted by the kernel: minor page faults (``ru_minflt``) of a loop
that allocates, touches and frees arrays of the extractor's sizes (a 320x240 level's flow, expansion and
histograms), in a fresh process with and without the call.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHURN = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from idtfv.allocator import keep_freed_memory
    assert keep_freed_memory() and keep_freed_memory()  # set, and once only
# float32 counts: a level's flow and expansion, its four integral histograms (HOG, HOF, MBHx, MBHy), ...
sizes = (320 * 240 * 2, 320 * 240 * 5, 321 * 241 * 8, 321 * 241 * 9, 321 * 241 * 8, 321 * 241 * 8,
         226 * 170 * 5, 226 * 170 * 2)
for _ in range(5):  # warm-up: the heap grows to its working size
    arrays = [np.ones(n, np.float32) for n in sizes]
    del arrays
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    arrays = [np.ones(n, np.float32) for n in sizes]
    del arrays
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")


def _faults(mode: str, **env) -> int:
    clean = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", CHURN, mode], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return int(out.stdout)


def test_freed_arrays_are_reused_without_new_page_faults():
    default, kept = _faults("default"), _faults("keep")
    # 40 rounds of ~13 MB: glibc's defaults fault most of those pages in again (~3,100 per round here)
    assert default > 20_000
    assert kept < default / 10


def test_the_users_malloc_settings_are_kept(monkeypatch):
    import idtfv.allocator as allocator

    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000")
    assert allocator.keep_freed_memory() is False
