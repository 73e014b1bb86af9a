"""``idtfv.allocator.tune_heap``: freed frame-sized arrays are reused instead of faulted in again, and the heap is
marked for transparent huge pages.

The checks are what the kernel reports for a fresh process with and without the call: minor page faults
(``ru_minflt``) of a loop that allocates, touches and frees arrays of the extractor's sizes (a 320x240 level's flow,
expansion and integral histograms), and the heap's mapping in ``/proc/self/smaps`` (its size and its ``hg`` flag,
``madvise(MADV_HUGEPAGE)``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHURN = """
import json, resource, sys
import numpy as np
state = None
if sys.argv[1] == "tune":
    from idtfv.allocator import tune_heap
    state = tune_heap()
    assert tune_heap() is state  # once only
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
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
heap = {}
lines = open("/proc/self/smaps").read().splitlines()
for i, line in enumerate(lines):
    if line.rstrip().endswith("[heap]"):
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        flags = next(l for l in lines[i + 1:] if l.startswith("VmFlags:")).split()[1:]
        heap = {"size": end - start, "flags": flags}
        break
print(json.dumps({"faults": faults, "state": state, "heap": heap}))
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")


def _run(mode: str, **env) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("GLIBC_TUNABLES", "IDTFV_TUNE_HEAP") and not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", CHURN, mode], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def _huge_pages_on() -> bool:
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    overcommit = Path("/proc/sys/vm/overcommit_memory")
    return (mode.exists() and "[never]" not in mode.read_text()
            and not (overcommit.exists() and overcommit.read_text().strip() == "2"))


def test_freed_arrays_are_reused_without_new_page_faults():
    default, tuned = _run("default"), _run("tune")
    assert tuned["state"]["thresholds"]
    # 40 rounds of ~13 MB: glibc's defaults fault most of those pages in again (~3,100 per round here)
    assert default["faults"] > 20_000
    assert tuned["faults"] < default["faults"] / 10


def test_the_heap_is_reserved_and_marked_for_huge_pages():
    from idtfv.allocator import HEAP_RESERVE

    default, tuned = _run("default"), _run("tune")
    assert "hg" not in default["heap"].get("flags", [])
    if not _huge_pages_on():
        assert tuned["state"]["huge_pages"] is False
        return
    assert tuned["state"]["huge_pages"] is True
    assert tuned["heap"]["size"] >= HEAP_RESERVE and "hg" in tuned["heap"]["flags"]


def test_the_users_malloc_settings_are_kept(monkeypatch):
    import idtfv.allocator as allocator

    for name, value in (("GLIBC_TUNABLES", "glibc.malloc.arena_max=2"), ("MALLOC_TRIM_THRESHOLD_", "1000"),
                        ("IDTFV_TUNE_HEAP", "0")):
        monkeypatch.setattr(allocator, "_state", None)
        for other in ("GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_", "IDTFV_TUNE_HEAP"):
            monkeypatch.delenv(other, raising=False)
        monkeypatch.setenv(name, value)
        assert allocator.tune_heap() == {"thresholds": False, "huge_pages": False}


THREAD = """
import json, sys, threading
import numpy as np
from idtfv.allocator import tune_heap, tune_thread_heap
mode = sys.argv[1]
if mode != "untuned":
    tune_heap()
out = {}

def flags_at(address):
    lines = open("/proc/self/smaps").read().splitlines()
    for i, line in enumerate(lines):
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= address < hi:
                flags = next(l for l in lines[i + 1:] if l.startswith("VmFlags:")).split()[1:]
                return {"heap": line.rstrip().endswith("[heap]"), "flags": flags}

def work():
    out["marked"] = tune_thread_heap() if mode != "plain" else None
    a = np.ones(1_000_000, np.float32)  # 4 MB: below the mmap threshold, from this thread's arena
    out["mapping"] = flags_at(a.ctypes.data)

t = threading.Thread(target=work)
t.start()
t.join()
out["main"] = tune_thread_heap()
print(json.dumps(out))
"""


def _thread_run(mode: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("GLIBC_TUNABLES", "IDTFV_TUNE_HEAP") and not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", THREAD, mode], env=clean, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def test_a_threads_arena_is_marked_for_huge_pages():
    tuned, plain, untuned = _thread_run("tuned"), _thread_run("plain"), _thread_run("untuned")
    assert tuned["main"] is False  # the main thread's blocks: the heap, marked by tune_heap already
    assert untuned["marked"] is False  # no tune_heap in the process: glibc's behaviour everywhere
    for run in (plain, untuned):  # a thread's arena as glibc maps it: not the heap, no mark
        assert run["mapping"]["heap"] is False and "hg" not in run["mapping"]["flags"]
    if not _huge_pages_on():
        assert tuned["marked"] is False
        return
    assert tuned["marked"] is True
    assert tuned["mapping"]["heap"] is False and "hg" in tuned["mapping"]["flags"]
