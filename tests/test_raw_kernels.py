"""``idtfv.raw_kernels.function``: a RawModule's kernels looked up once per module object and name."""

from __future__ import annotations

import importlib.util

from idtfv import raw_kernels


class _Module:
    """A stand-in with CuPy's ``get_function``, counting the lookups."""

    def __init__(self):
        self.lookups = []

    def get_function(self, name):
        self.lookups.append(name)
        return (self, name)  # a distinct object per call: a cached one comes back as the same object


def test_each_kernel_is_looked_up_once_per_module():
    a, b = _Module(), _Module()
    first = raw_kernels.function(a, "solve")
    assert raw_kernels.function(a, "solve") is first and first == (a, "solve")
    assert raw_kernels.function(a, "median") == (a, "median")
    assert raw_kernels.function(b, "solve") == (b, "solve")  # another module (a benchmark's counting stand-in)
    for _ in range(100):
        raw_kernels.function(a, "solve")
    assert a.lookups == ["solve", "median"] and b.lookups == ["solve"]


def test_the_device_modules_launch_through_it():
    """Every kernel module's launcher takes its functions from the cache (the host's 2.6 us per lookup, ~160
    launches a frame); checked in the source, since the modules need CuPy to import (``find_spec`` does not run
    them)."""
    from pathlib import Path

    for name in ("idtfv.idt._frame_cuda", "idtfv.idt._histograms_cuda", "idtfv.idt._tracking_cuda",
                 "idtfv.idt.flow._farneback_cuda", "idtfv.idt.flow._tvl1_cupy"):
        text = Path(importlib.util.find_spec(name).origin).read_text()
        assert "from idtfv.raw_kernels import function" in text, name
        assert "module().get_function(" not in text, name
