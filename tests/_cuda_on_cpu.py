"""Run CUDA C kernels on the CPU, for tests on machines without a GPU.

The kernel source (the very string that CuPy compiles) is compiled with g++ after a small prelude that defines
CUDA's qualifiers, ``blockIdx`` / ``threadIdx`` / ``blockDim`` / ``gridDim`` and ``__syncthreads``; every kernel gets
an ``extern "C"`` launcher that runs its grid block by block. Threads of a block run as fibers on one OS thread
(a 20-line x86-64 context switch): ``__syncthreads()`` hands control back to the block's scheduler, which resumes
every live thread once per round, so no thread passes a barrier before all have reached it. ``__shared__`` becomes
``static``: one copy per kernel, which is one copy per block because blocks run one after another. Kernels without
``__syncthreads`` run as plain loops.

Floating point: ``-O1 -ffp-contract=off`` on SSE2 is IEEE single/double without fused multiply-add, which is what
the CUDA code asks for (``--fmad=false``, IEEE division and square root by default), so the emulated kernels do
the GPU's arithmetic in the GPU's order (reductions included). What this cannot show: races between threads that
a real GPU would expose, and anything about speed.

Only x86-64 with g++; :func:`available` says whether it can run here.

Threads: the compiled kernels keep their launch state in globals (``blockIdx``, the fiber stacks), so every
launch, and every compilation, holds :data:`LAUNCH_LOCK`; several threads may then drive the emulated device at
once (``idtfv features --device cuda`` runs videos on several threads). The stand-in ``cupy`` has per-thread
current streams like CuPy's (``cupy.cuda.Stream`` as a context manager, ``get_current_stream``), and counts the
launches made on each stream (``cupy.launches``: ``{stream label: count}``, the default stream ``"null"``) and the
device calls made by each thread (``cupy.device_calls``: ``{thread ident: {call: count}}``, every kernel launch
as ``"launch <kernel>"``, every allocation or copy: ``asarray``, ``asnumpy``, ``empty``, ``zeros``, ..., and every
stream's ``synchronize``; the
threads' names in ``cupy.thread_names``), for the checks that the device is driven from the threads it should be.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import types
from pathlib import Path

import numpy as np

_PRELUDE = r"""
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <algorithm>
using std::floor; using std::sqrt;
struct emu_dim3 { unsigned x, y, z; };
static emu_dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }

// ---- fibers: one stack per thread of a block, switched without system calls ----
extern "C" void emu_switch(void** save_sp, void* load_sp);
asm(R"(
.text
.globl emu_switch
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
)");
static const int EMU_MAX_THREADS = 1024;
static const size_t EMU_STACK = 64 * 1024;
static char* emu_stacks = nullptr;
static void* emu_sched_sp;
static void* emu_sp[EMU_MAX_THREADS];
static bool emu_done[EMU_MAX_THREADS];
static int emu_current;
static void (*emu_body)(void*);
static void* emu_body_arg;

extern "C" void __syncthreads() { emu_switch(&emu_sp[emu_current], emu_sched_sp); }

static void emu_entry() {
    emu_body(emu_body_arg);
    emu_done[emu_current] = true;
    emu_switch(&emu_sp[emu_current], emu_sched_sp);
    abort();  // never resumed
}

// Run body(arg) as blockDim.x fibers of the current block until all return.
static void emu_run_block(void (*body)(void*), void* arg) {
    int n = (int)blockDim.x;
    if (n > EMU_MAX_THREADS) abort();
    if (!emu_stacks) emu_stacks = (char*)aligned_alloc(64, EMU_STACK * EMU_MAX_THREADS);
    emu_body = body; emu_body_arg = arg;
    for (int t = 0; t < n; ++t) {
        // new stack: [entry address][6 zeroed callee-saved registers]; after `ret` into emu_entry the stack
        // pointer is 8 mod 16, as at any function entry (the call's return address on a 16-aligned stack)
        void** top = (void**)(emu_stacks + EMU_STACK * (t + 1));
        top -= 1;
        *--top = (void*)&emu_entry;
        for (int r = 0; r < 6; ++r) *--top = nullptr;
        emu_sp[t] = (void*)top;
        emu_done[t] = false;
    }
    int live = n;
    while (live > 0) {
        for (int t = 0; t < n; ++t) {
            if (emu_done[t]) continue;
            emu_current = t;
            threadIdx.x = t; threadIdx.y = 0; threadIdx.z = 0;
            emu_switch(&emu_sched_sp, emu_sp[t]);
            if (emu_done[t]) --live;
        }
    }
}
"""


def available() -> bool:
    """g++ is installed and this is x86-64 (the fiber switch is x86-64 assembly)."""
    return shutil.which("g++") is not None and platform.machine() in ("x86_64", "AMD64")


#: Held by every emulated launch and compilation (the kernels' launch state is global).
LAUNCH_LOCK = threading.RLock()

_C_TYPES = {"float": ctypes.c_float, "double": ctypes.c_double, "int": ctypes.c_int, "long long": ctypes.c_longlong,
            "unsigned": ctypes.c_uint}


def _parse_kernels(source: str):
    """[(name, [(ctype text, param name), ...], uses_syncthreads)] for every ``__global__`` function."""
    kernels = []
    for m in re.finditer(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)\s*\{", source):
        params = []
        for p in " ".join(m.group(2).split()).split(","):
            p = p.strip()
            pm = re.match(r"(.*?)(\w+)$", p)
            params.append((pm.group(1).strip(), pm.group(2)))
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(source[i], 0)
            i += 1
        kernels.append((m.group(1), params, "__syncthreads" in source[m.end():i]))
    return kernels


def _launcher(name, params, sync):
    decl = ", ".join(f"{t} {n}" for t, n in params)
    names = ", ".join(n for _, n in params)
    fields = "; ".join(f"{t} {n}" for t, n in params)
    head = f'extern "C" void launch_{name}(int emu_gx, int emu_gy, int emu_bx, {decl}) {{\n'
    head += "    gridDim.x = emu_gx; gridDim.y = emu_gy; gridDim.z = 1; blockDim.x = emu_bx; blockDim.y = 1; " \
            "blockDim.z = 1;\n"
    loop = ("    for (int by = 0; by < emu_gy; ++by) for (int bx = 0; bx < emu_gx; ++bx) {\n"
            "        blockIdx.x = bx; blockIdx.y = by; blockIdx.z = 0;\n")
    if not sync:
        body = ("        for (int t = 0; t < emu_bx; ++t) { threadIdx.x = t; threadIdx.y = 0; threadIdx.z = 0; "
                f"{name}({names}); }}\n")
        return head + loop + body + "    }\n}\n"
    pre = f"struct emu_args_{name} {{ {fields}; }};\n"
    pre += (f"static void emu_body_{name}(void* a) {{ emu_args_{name}* p = (emu_args_{name}*)a; "
            f"{name}({', '.join('p->' + n for _, n in params)}); }}\n")
    body = (f"        emu_args_{name} args = {{ {names} }};\n"
            f"        emu_run_block(&emu_body_{name}, &args);\n")
    return pre + head + loop + body + "    }\n}\n"


def _argtype(ctext: str):
    if "*" in ctext:
        return ctypes.c_void_p
    return _C_TYPES[ctext.replace("const", "").strip()]


def compile_source(source: str, *, build_dir: str | Path | None = None, on_launch=None):
    """Compile CUDA C ``source`` for the CPU; returns ``{kernel name: callable(grid, block, args)}``.

    Arguments follow CuPy's ``RawKernel`` call: ``grid`` and ``block`` tuples (only ``grid[0]``, ``grid[1]``,
    ``block[0]`` are used), ``args`` a tuple of NumPy arrays (passed as pointers: C-contiguous, as CuPy's) and NumPy
    scalars. ``on_launch(name)``, when given, is called after each launch.
    """
    kernels = _parse_kernels(source)
    text = _PRELUDE + source + "\n" + "".join(_launcher(*k) for k in kernels)
    build = Path(build_dir or tempfile.mkdtemp(prefix="cuda_on_cpu_"))
    tag = hashlib.sha256(text.encode()).hexdigest()[:16]
    lib_path = build / f"kernels_{tag}.so"
    with LAUNCH_LOCK:  # two threads compiling the same source must not load a half-written library
        if not lib_path.exists():
            src_path = build / f"kernels_{tag}.cpp"
            src_path.write_text(text)
            cmd = ["g++", "-std=c++17", "-O1", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared",
                   "-o", str(lib_path), str(src_path)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"g++ could not compile the kernels: {res.stderr[-2000:]}")
        lib = ctypes.CDLL(str(lib_path))
    out = {}
    for name, params, _ in kernels:
        fn = getattr(lib, f"launch_{name}")
        fn.restype = None
        fn.argtypes = [ctypes.c_int] * 3 + [_argtype(t) for t, _ in params]

        def call(grid, block, args, _fn=fn, _params=params, _name=name):
            if len(args) != len(_params):
                raise TypeError(f"{_name}: expected {len(_params)} arguments, got {len(args)}")
            conv = []
            for a, (t, _) in zip(args, _params):
                if "*" in t:
                    if not (isinstance(a, np.ndarray) and a.flags.c_contiguous):
                        raise TypeError(f"{_name}: pointer arguments must be C-contiguous arrays")
                    conv.append(a.ctypes.data)
                else:
                    conv.append(a.item() if isinstance(a, np.generic) else a)
            with LAUNCH_LOCK:
                _fn(int(grid[0]), int(grid[1]) if len(grid) > 1 else 1, int(block[0]), *conv)
            if on_launch is not None:
                on_launch(_name)

        out[name] = call
    return out


def fake_cupy(build_dir: str | Path | None = None) -> types.ModuleType:
    """A stand-in ``cupy`` module: NumPy arrays, ``RawModule`` kernels compiled by :func:`compile_source`, and
    ``cuda.runtime.getDeviceCount()`` reporting one device."""
    cp = types.ModuleType("cupy")
    for name in ("float32", "float64", "int32", "empty", "zeros", "empty_like", "ascontiguousarray", "stack", "inf"):
        setattr(cp, name, getattr(np, name))
    cp.asarray = np.asarray
    cp.asnumpy = np.asarray
    cp.ndarray = np.ndarray
    # one emulated device, for code that asks CuPy whether it sees one (idtfv.idt.device)
    cp.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    _add_streams(cp)
    record = cp.record_call

    def recorded(name, fn):
        def call(*args, **kwargs):
            record(name)
            return fn(*args, **kwargs)

        call.__name__ = name
        return call

    for name in ("asarray", "asnumpy", "empty", "zeros", "empty_like", "ascontiguousarray", "stack"):
        setattr(cp, name, recorded(name, getattr(cp, name)))

    def on_launch(name):
        label = cp.cuda.get_current_stream().label
        record(f"launch {name}")
        with LAUNCH_LOCK:
            cp.launches[label] = cp.launches.get(label, 0) + 1

    class RawModule:
        def __init__(self, code, options=()):
            self._kernels = compile_source(code, build_dir=build_dir, on_launch=on_launch)

        def get_function(self, name):
            return self._kernels[name]

    cp.RawModule = RawModule
    return cp


def _add_streams(cp) -> None:
    """CuPy's stream API on the stand-in: every call runs at once, so synchronising does nothing; what is kept is
    which stream is current in each thread (CuPy's is per thread), for the launch counts."""
    current = threading.local()
    counter = iter(range(1, 1 << 62))
    cp.device_calls, cp.thread_names = {}, {}
    record_lock = threading.Lock()

    def record(call):
        """Count ``call`` for the calling thread (``cupy.device_calls``)."""
        thread = threading.current_thread()
        with record_lock:
            calls = cp.device_calls.setdefault(thread.ident, {})
            calls[call] = calls.get(call, 0) + 1
            cp.thread_names[thread.ident] = thread.name

    cp.record_call = record

    class Stream:
        def __init__(self, null=False, non_blocking=False, ptr=None):
            self.label = "null" if null else f"stream{next(counter)}"
            self.non_blocking = bool(non_blocking)
            self.ptr = 0 if null else id(self)
            self._prev = []

        def __enter__(self):
            self._prev.append(getattr(current, "stream", None))
            current.stream = self
            return self

        def __exit__(self, *exc):
            current.stream = self._prev.pop()

        def use(self):
            current.stream = self
            return self

        def synchronize(self):
            record("synchronize")

        def record(self, event=None):
            event = event or Event()
            event.record(self)
            return event

    class Event:
        def __init__(self, *args, **kwargs):
            self.time = None

        def record(self, stream=None):
            import time

            self.time = time.perf_counter()

        def synchronize(self):
            pass

    null = Stream(null=True)

    def get_current_stream(*args):
        return getattr(current, "stream", None) or null

    def get_elapsed_time(start, end):
        return 1e3 * (end.time - start.time)

    class Device:
        def __init__(self, device=None):
            self.id = 0

        def synchronize(self):
            pass

    cp.launches = {}
    cp.cuda.Stream = Stream
    cp.cuda.Event = Event
    cp.cuda.Device = Device
    cp.cuda.get_current_stream = get_current_stream
    cp.cuda.get_elapsed_time = get_elapsed_time
    cp.cuda.Stream.null = null


#: The modules that import CuPy at their top (the device kernels and the driver that binds them on import). A
#: test's copy of them is bound to the stand-in, so :func:`stand_in` forgets all of them before and after it.
DEVICE_MODULES = ("idtfv.idt._histograms_cuda", "idtfv.idt._tracking_cuda", "idtfv.idt._frame_cuda",
                  "idtfv.idt.flow._farneback_cuda", "idtfv.idt.flow.farneback_cuda")


def _forget(monkeypatch=None) -> None:
    """Drop :data:`DEVICE_MODULES` from ``sys.modules`` and from their packages' attributes (so a later import,
    e.g. a gpu test's with the real CuPy, does not reuse a copy bound to the stand-in)."""
    import importlib
    import sys

    for name in DEVICE_MODULES:
        package, attr = name.rsplit(".", 1)
        pkg = importlib.import_module(package)
        if monkeypatch is None:
            sys.modules.pop(name, None)
            pkg.__dict__.pop(attr, None)
        else:
            monkeypatch.delitem(sys.modules, name, raising=False)
            monkeypatch.delattr(pkg, attr, raising=False)


@contextlib.contextmanager
def stand_in(build_dir, monkeypatch):
    """The stand-in ``cupy`` (yielded) as ``sys.modules["cupy"]`` for one test, with every device module imported
    afresh over it and forgotten afterwards; skips the test where the emulator cannot run (:func:`available`)."""
    import sys

    import pytest

    if not available():
        pytest.skip("needs g++ on x86-64")
    cp = fake_cupy(build_dir)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    _forget(monkeypatch)
    try:
        yield cp
    finally:
        _forget()


def nvcc_ptx(source: str, build_dir) -> str:
    """PTX of ``source`` compiled by the real ``nvcc`` as the kernels are on a device (``--fmad=false``); fails the
    calling test with nvcc's messages when it does not compile. The caller skips where nvcc is absent."""
    build_dir = Path(build_dir)
    (build_dir / "k.cu").write_text(source)
    res = subprocess.run(["nvcc", "-ptx", "--fmad=false", "-o", str(build_dir / "k.ptx"), str(build_dir / "k.cu")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return (build_dir / "k.ptx").read_text()


@contextlib.contextmanager
def mutated(module, monkeypatch, old: str, new: str):
    """``module``'s kernels compiled from its ``_SOURCE`` with the one occurrence of ``old`` replaced by ``new`` (a
    deliberately broken kernel, for the checks that must then fail); the compiled module is dropped before and
    after, so neither the broken nor the sound kernels leak into other tests."""
    assert module._SOURCE.count(old) == 1, old
    monkeypatch.setattr(module, "_SOURCE", module._SOURCE.replace(old, new))
    module.module.cache_clear()
    try:
        yield module
    finally:
        module.module.cache_clear()
