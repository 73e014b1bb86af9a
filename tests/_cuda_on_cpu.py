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
the GPU's arithmetic in the GPU's order (reductions included).

The order probe (:func:`thread_order`, or ``IDTFV_EMU_ORDER=forward|reverse|random:SEED`` for a whole process):
a block's threads run in reverse or in a seeded random permutation, a new one for every barrier interval (and
for kernels without barriers, whose threads are a plain loop), and a grid's blocks in reverse or permuted order.
A race-free kernel gives the same bytes in every order; one whose thread reads what another thread of the launch
writes (outside a barrier of its block) does not. Under the probe every ``__shared__`` array is also filled at
each block's start, and every ``cupy.empty`` / ``cupy.empty_like`` array of the stand-in at its allocation, with a
poison byte, so that a read of memory nothing wrote shows up as a change with the byte. :func:`launch_trace`
records every launch's array arguments after it (digests) and every download, so two runs can be compared launch
by launch (``tests/test_cuda_orders.py`` does, for every kernel). Outside the probe the order is index order and
nothing is poisoned, as before (and as fast).

Checks on every launch, of what a device would refuse or run wrongly while the emulator's launcher would
convert or carry on: each argument's type against its C parameter (a scalar's NumPy dtype: ``int`` is
``np.int32``, ``long long`` ``np.int64``, ``float`` ``np.float32``, ``double`` ``np.float64``; a Python int is
CuPy's int64 and a Python float its float64; an array's dtype against its pointer's type, ``void*`` any), since a
device reads the bytes it is given; CUDA's limits (at least one block, ``gridDim.y`` <= 65535, 2-D grids of 1-D
blocks of 1 to 1024 threads; a launch of 0 blocks fails on a device); ``__syncthreads`` reached by part of a
block while the rest has returned, or threads at different barriers (divergent barriers: undefined on a device);
more than 48 KB of static ``__shared__`` memory; a write past the end of a ``__shared__`` array (guard bytes
after each); and, for the stand-in ``cupy``'s kernels, a host array where a
device one is due (its arrays are :class:`DeviceArray`, NumPy's are not). Each raises (``TypeError``,
``ValueError``, ``RuntimeError``) naming the kernel.

What this cannot show: races the probe's orders do not bring out (a thread runs to its next barrier without being
interleaved with others, so a lost update of a non-atomic read-modify-write of the same address by two threads,
or a read that another thread's write lands in the middle of, stays unseen; warp-synchronous code would pass),
the ordering of CUDA streams (the stand-in runs every call at once), host code that hands a device array to
NumPy (CuPy refuses the implicit conversion; a :class:`DeviceArray` is an ndarray), NVRTC-specific compile
errors, and anything about speed.

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
import itertools
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

// What a launch did that a device would not run as written: 1 a barrier some threads of a block reached while
// others of the block had returned (__syncthreads in divergent code), 2 threads of a block waiting at different
// barriers (the same), 3 more than 48 KB of static __shared__ memory. Reset by each launch, returned by it.
static int emu_fault = 0;
static int emu_site[EMU_MAX_THREADS];  // the barrier (its source line) each thread of the block waits at

static void emu_sync(int line) {
    emu_site[emu_current] = line;
    emu_switch(&emu_sp[emu_current], emu_sched_sp);
}
#define __syncthreads() emu_sync(__LINE__)

// ---- the order probe: threads of a block (per barrier interval) and blocks of a grid in another order ----
// emu_mode 0: index order (the default); 1: reverse; 2: a permutation drawn from emu_rng (splitmix64), a new one
// for every block, barrier interval and grid. emu_poison >= 0: every __shared__ array is filled with that byte
// at the start of each block (a GPU's shared memory starts undefined); -1 (the default): left as it is.
static int emu_mode = 0;
static unsigned long long emu_rng = 0;
static int emu_poison = -1;
extern "C" void emu_set_order(int mode, unsigned long long seed, int poison) {
    emu_mode = mode; emu_rng = seed; emu_poison = poison;
}
static unsigned long long emu_next() {
    unsigned long long z = (emu_rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
template <typename I> static void emu_perm(I* p, I n) {
    for (I i = 0; i < n; ++i) p[i] = emu_mode == 1 ? n - 1 - i : i;
    if (emu_mode == 2)
        for (I i = n - 1; i > 0; --i) {
            I j = (I)(emu_next() % (unsigned long long)(i + 1));
            I t = p[i]; p[i] = p[j]; p[j] = t;
        }
}
// __shared__ arrays, noted when a thread first declares them (before any thread can have written them); each is
// followed by EMU_GUARD guard bytes (the declaration is rewritten into a struct of the array and its guard), so a
// write past its end is seen at the end of the launch (fault 4).
static const int EMU_MAX_SHARED = 64;
#define EMU_GUARD 256
static void* emu_shared_ptr[EMU_MAX_SHARED];
static size_t emu_shared_size[EMU_MAX_SHARED];
static unsigned char* emu_shared_guard[EMU_MAX_SHARED];
static int emu_n_shared = 0;
static size_t emu_shared_total = 0;
static void emu_poison_shared() {
    for (int i = 0; i < emu_n_shared; ++i) memset(emu_shared_ptr[i], emu_poison, emu_shared_size[i]);
}
static inline void emu_note_shared(void* p, size_t size, unsigned char* guard) {
    for (int i = 0; i < emu_n_shared; ++i) if (emu_shared_ptr[i] == p) return;
    if (emu_n_shared == EMU_MAX_SHARED) abort();
    emu_shared_ptr[emu_n_shared] = p; emu_shared_size[emu_n_shared] = size; emu_shared_guard[emu_n_shared] = guard;
    ++emu_n_shared;
    emu_shared_total += size;  // over 48 KB: every later launch of the library reports it
    memset(guard, 0xA5, EMU_GUARD);
    if (emu_poison >= 0) memset(p, emu_poison, size);
}
// Whether a guard was written (then restored), i.e. a thread wrote past the end of a __shared__ array.
static bool emu_guards_broken() {
    bool broken = false;
    for (int i = 0; i < emu_n_shared; ++i)
        for (int k = 0; k < EMU_GUARD; ++k)
            if (emu_shared_guard[i][k] != 0xA5) { broken = true; memset(emu_shared_guard[i], 0xA5, EMU_GUARD); break; }
    return broken;
}

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
    if (emu_poison >= 0) emu_poison_shared();
    int live = n, order[EMU_MAX_THREADS];
    while (live > 0) {
        emu_perm(order, n);  // the identity unless the order probe is on: a new order each barrier interval
        int waiting = 0, finished = 0;
        int site = 0;
        for (int q = 0; q < n; ++q) {
            int t = order[q];
            if (emu_done[t]) continue;
            emu_current = t;
            threadIdx.x = t; threadIdx.y = 0; threadIdx.z = 0;
            emu_switch(&emu_sched_sp, emu_sp[t]);
            if (emu_done[t]) { --live; ++finished; continue; }
            if (waiting++ == 0) site = emu_site[t];
            else if (emu_site[t] != site && !emu_fault) emu_fault = 2;
        }
        if (waiting && finished && !emu_fault) emu_fault = 1;
    }
}
"""


def available() -> bool:
    """g++ is installed and this is x86-64 (the fiber switch is x86-64 assembly)."""
    return shutil.which("g++") is not None and platform.machine() in ("x86_64", "AMD64")


#: Held by every emulated launch and compilation (the kernels' launch state is global).
LAUNCH_LOCK = threading.RLock()

#: The order probe: ``None`` (the default: threads and blocks in index order, nothing poisoned) or ``(mode, seed,
#: poison byte, generation)`` with mode 0 (index order), 1 (reverse) or 2 (a seeded random permutation); each
#: :func:`thread_order` block has its own generation, so that its permutations start again from its seed. Set it
#: with :func:`thread_order`; the environment variable ``IDTFV_EMU_ORDER`` (``forward``, ``reverse`` or
#: ``random:SEED``) sets it for the whole process when this module is imported.
ORDER: tuple[int, int, int, int] | None = None
_GENERATIONS = itertools.count(1)

#: When a list (:func:`launch_trace`), every emulated launch appends ``(kernel name, (digest of each array
#: argument after the launch, ...))`` and every ``cupy.asnumpy`` of the stand-in ``("asnumpy", (digest,))``.
TRACE: list | None = None

_MODES = {"forward": 0, "reverse": 1, "random": 2}


def _order_setting(order: str, seed: int = 0, poison: int | None = None) -> tuple[int, int, int]:
    """``(mode, seed, poison byte)``; by default the poison byte differs between orders (and seeds), so a read of
    memory no thread wrote gives different bytes in different orders."""
    if order not in _MODES:
        raise ValueError(f"thread order: expected one of {sorted(_MODES)}, got {order!r}")
    if not 0 <= seed < 1 << 63:
        raise ValueError(f"thread order: the seed must be in [0, 2**63), got {seed}")
    mode = _MODES[order]
    if poison is None:
        poison = (0x00, 0xFF)[mode] if mode < 2 else 0x11 + (seed * 0x9D) % 0xDD
    if not 0 <= poison <= 255:
        raise ValueError(f"thread order: the poison must be a byte (0 to 255), got {poison}")
    return mode, seed, poison


@contextlib.contextmanager
def thread_order(order: str = "reverse", seed: int = 0, *, poison: int | None = None):
    """Run every emulated launch in this block with its threads and blocks in ``order``.

    ``"forward"`` is index order, ``"reverse"`` its reverse, ``"random"`` a permutation drawn from ``seed`` (a new
    one per grid, per block and per barrier interval, in a fixed sequence for a fixed sequence of launches). In
    every order (``"forward"`` included) each ``__shared__`` array is filled at each block's start, and every
    ``cupy.empty`` / ``cupy.empty_like`` array of the stand-in at its allocation, with the byte ``poison``
    (by default one that depends on the order and seed, so that a read of memory nothing wrote shows up as a
    difference between orders as a race does; give the same ``poison`` to every order to tell races apart from
    such reads). A race-free kernel that reads only what was written gives the same bytes in every order. Not for
    several threads at once: the setting is process-wide and the permutations follow the launches' sequence.
    """
    global ORDER
    prev, ORDER = ORDER, (*_order_setting(order, seed, poison), next(_GENERATIONS))
    try:
        yield
    finally:
        ORDER = prev


@contextlib.contextmanager
def launch_trace():
    """Record :data:`TRACE` in this block (yielded): every launch's kernel and its array arguments' bytes after
    it (digests), every download's bytes. Two runs of the same host code give equal traces when every launch
    wrote the same bytes; the first difference names the launch."""
    global TRACE
    prev, TRACE = TRACE, []
    try:
        yield TRACE
    finally:
        TRACE = prev


def _digest(a: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data, digest_size=12).hexdigest()


def _order_from_env() -> tuple[int, int, int, int] | None:
    import os

    text = os.environ.get("IDTFV_EMU_ORDER", "").strip()
    if not text:
        return None
    name, _, seed = text.partition(":")
    try:
        return (*_order_setting(name, int(seed or 0)), 0)
    except ValueError as err:
        raise ValueError(f"IDTFV_EMU_ORDER={text!r}: {err}; use forward, reverse or random:SEED") from None


ORDER = _order_from_env()

#: The NumPy dtype each C scalar parameter type must be given as (what CuPy hands the kernel: a NumPy scalar's
#: bytes as they are; a Python int becomes an int64, a Python float a float64), and the dtype of the array a
#: pointer to each type must be given (``void*``: any).
_SCALAR_DTYPES = {"float": np.float32, "double": np.float64, "int": np.int32, "long long": np.int64,
                  "unsigned": np.uint32, "size_t": np.uint64, "unsigned char": np.uint8}
_PYTHON_SCALARS = {int: np.dtype(np.int64), float: np.dtype(np.float64)}

#: What a launch's return code says (the emulator's checks of what a device would not run as written).
_FAULTS = {1: "__syncthreads() reached by some threads of a block while others had returned (a barrier in divergent "
              "code: undefined behaviour on a device; return after the last barrier, or guard the work instead)",
           2: "threads of a block wait at different __syncthreads() calls (a barrier in divergent code: undefined "
              "behaviour on a device)",
           3: "more than 48 KB of static __shared__ memory in this source's kernels (a device refuses to launch a "
              "kernel with more)",
           4: "a thread wrote past the end of a __shared__ array (more threads than the array has slots?)"}

#: CUDA's launch limits (compute capability 3.0 and later).
MAX_BLOCK = 1024
MAX_GRID = (2**31 - 1, 65535, 65535)

_C_TYPES = {"float": ctypes.c_float, "double": ctypes.c_double, "int": ctypes.c_int, "long long": ctypes.c_longlong,
            "unsigned": ctypes.c_uint, "size_t": ctypes.c_size_t, "unsigned char": ctypes.c_ubyte}


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
    head = f'extern "C" int launch_{name}(int emu_gx, int emu_gy, int emu_bx, {decl}) {{\n'
    head += ("    emu_fault = 0;\n"
             "    gridDim.x = emu_gx; gridDim.y = emu_gy; gridDim.z = 1; blockDim.x = emu_bx; blockDim.y = 1; "
             "blockDim.z = 1;\n")
    # the default: blocks in index order (x fastest), threads in index order; the order probe (emu_mode != 0)
    # permutes both (the blocks once per grid, the threads once per block or barrier interval)
    loop = ("    long long emu_nb = (long long)emu_gx * emu_gy, *emu_bo = nullptr;\n"
            "    if (emu_mode) { emu_bo = (long long*)malloc(sizeof(long long) * (emu_nb ? emu_nb : 1)); "
            "emu_perm(emu_bo, emu_nb); }\n"
            "    for (long long emu_q = 0; emu_q < emu_nb; ++emu_q) {\n"
            "        long long emu_b = emu_bo ? emu_bo[emu_q] : emu_q;\n"
            "        blockIdx.x = (unsigned)(emu_b % emu_gx); blockIdx.y = (unsigned)(emu_b / emu_gx); "
            "blockIdx.z = 0;\n")
    tail = ("    }\n    free(emu_bo);\n    if (!emu_fault && emu_shared_total > 48 * 1024) emu_fault = 3;\n"
            "    if (emu_n_shared && emu_guards_broken() && !emu_fault) emu_fault = 4;\n"
            "    return emu_fault;\n}\n")
    if not sync:
        body = ("        int emu_to[EMU_MAX_THREADS];\n"
                "        if (emu_mode) emu_perm(emu_to, emu_bx);\n"
                "        for (int t = 0; t < emu_bx; ++t) { threadIdx.x = emu_mode ? emu_to[t] : t; "
                f"threadIdx.y = 0; threadIdx.z = 0; {name}({names}); }}\n")
        return head + loop + body + tail
    pre = f"struct emu_args_{name} {{ {fields}; }};\n"
    pre += (f"static void emu_body_{name}(void* a) {{ emu_args_{name}* p = (emu_args_{name}*)a; "
            f"{name}({', '.join('p->' + n for _, n in params)}); }}\n")
    body = (f"        emu_args_{name} args = {{ {names} }};\n"
            f"        emu_run_block(&emu_body_{name}, &args);\n")
    return pre + head + loop + body + tail


def _argtype(ctext: str):
    if "*" in ctext:
        return ctypes.c_void_p
    return _C_TYPES[ctext.replace("const", "").strip()]


def _expected_dtype(ctext: str):
    """The NumPy dtype a parameter of C type ``ctext`` must be given as (its array's for a pointer; ``None``:
    any array, for ``void*``)."""
    base = " ".join(ctext.replace("*", " ").replace("const", " ").split())
    if base == "void":
        return None
    return np.dtype(_SCALAR_DTYPES[base])


def _note_shared(source: str) -> str:
    """``source`` with every ``__shared__`` declaration made a static struct of the array and guard bytes after
    it, and followed by ``emu_note_shared`` of the array (for the order probe's poisoning of shared memory at each
    block's start, and the check that no thread writes past its end)."""
    return re.sub(r"__shared__\s+([\w ]+?)\s+(\w+)\s*((?:\[[^;\]]*\])*)\s*;",
                  r"static struct { \1 a\3; unsigned char g[EMU_GUARD]; } emu_sh_\2; auto& \2 = emu_sh_\2.a; "
                  r"emu_note_shared((void*)&\2, sizeof(\2), emu_sh_\2.g);", source)


def _check_launch(name, grid, block):
    """CUDA's launch configuration limits: what a device refuses the emulator refuses too, and a grid of 0 blocks
    (``invalid configuration argument`` on a device; CuPy's launcher has run it as 1 block, ``max(1, grid)``)."""
    grid = tuple(int(g) for g in grid)
    block = tuple(int(b) for b in block)
    if not 1 <= len(grid) <= 3 or not 1 <= len(block) <= 3:
        raise ValueError(f"{name}: grid and block must have 1 to 3 dimensions, got grid {grid} and block {block}")
    if any(g < 1 or g > m for g, m in zip(grid, MAX_GRID)):
        raise ValueError(f"{name}: grid {grid} is outside CUDA's limits (1 to {MAX_GRID} blocks per dimension; a "
                         "grid of 0 blocks is refused by the device or run as 1 block by CuPy: skip the launch on "
                         "the host)")
    if len(grid) == 3 and grid[2] != 1 or any(b != 1 for b in block[1:]):
        raise ValueError(f"{name}: the emulator runs 2-D grids of 1-D blocks, got grid {grid} and block {block}")
    if not 1 <= block[0] <= MAX_BLOCK:
        raise ValueError(f"{name}: block {block} is outside CUDA's limits (1 to {MAX_BLOCK} threads)")
    return grid[0], grid[1] if len(grid) > 1 else 1, block[0]


def compile_source(source: str, *, build_dir: str | Path | None = None, on_launch=None, device_type=None):
    """Compile CUDA C ``source`` for the CPU; returns ``{kernel name: callable(grid, block, args)}``.

    Arguments follow CuPy's ``RawKernel`` call: ``grid`` and ``block`` tuples (2-D grids of 1-D blocks, within
    CUDA's limits: at least one block, at most 65535 in y and 1024 threads), ``args`` a tuple of NumPy arrays
    (passed as pointers: C-contiguous, as CuPy's) and NumPy scalars. Every argument's type must be the one its C
    parameter reads on a device: a scalar's dtype that of its C type (``int``: ``np.int32``, ``long long``:
    ``np.int64``, ``float``: ``np.float32``, ``double``: ``np.float64``; a Python int is CuPy's int64, a Python
    float its float64), an array's dtype its pointer's (``void*``: any); a mismatch raises ``TypeError`` rather
    than being converted; with ``device_type``, every array must be one of it (the stand-in's
    :class:`DeviceArray`: a host array handed to a kernel raises ``TypeError``, as CuPy's launcher does).
    ``on_launch(name)``, when given, is called after each launch. Threads and blocks run
    in the order :data:`ORDER` says at the launch (:func:`thread_order`).
    """
    kernels = _parse_kernels(source)
    text = _PRELUDE + _note_shared(source) + "\n" + "".join(_launcher(*k) for k in kernels)
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
    lib.emu_set_order.restype = None
    lib.emu_set_order.argtypes = [ctypes.c_int, ctypes.c_ulonglong, ctypes.c_int]
    lib_order = [None]  # the setting this library's globals hold (None: the default, index order)

    def set_order():  # under LAUNCH_LOCK
        if lib_order[0] != ORDER:
            mode, seed, poison = ORDER[:3] if ORDER else (0, 0, -1)
            lib.emu_set_order(mode, seed, poison)
            lib_order[0] = ORDER

    out = {}
    for name, params, _ in kernels:
        fn = getattr(lib, f"launch_{name}")
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int] * 3 + [_argtype(t) for t, _ in params]
        expected = [(n, "*" in t, _expected_dtype(t), t) for t, n in params]

        def call(grid, block, args, _fn=fn, _expected=expected, _name=name):
            if len(args) != len(_expected):
                raise TypeError(f"{_name}: expected {len(_expected)} arguments, got {len(args)}")
            gx, gy, bx = _check_launch(_name, grid, block)
            conv = []
            for a, (pname, pointer, dtype, ctext) in zip(args, _expected):
                if pointer:
                    if not (isinstance(a, np.ndarray) and a.flags.c_contiguous):
                        raise TypeError(f"{_name}: pointer arguments must be C-contiguous arrays")
                    if device_type is not None and not isinstance(a, device_type):
                        raise TypeError(f"{_name}: {pname} ({ctext}) is a host array, not a device one: CuPy "
                                        "refuses it (upload it with cupy.asarray)")
                    if dtype is not None and a.dtype != dtype:
                        raise TypeError(f"{_name}: {pname} ({ctext}) must be a {dtype} array, got {a.dtype}")
                    conv.append(a.ctypes.data)
                else:
                    given = a.dtype if isinstance(a, np.generic) else _PYTHON_SCALARS.get(type(a))
                    if given != dtype:
                        raise TypeError(f"{_name}: {pname} ({ctext}) must be a np.{dtype} scalar, got "
                                        f"{type(a).__name__}{'' if given is None else f' ({given})'}: a device "
                                        "would read its bytes as they are")
                    conv.append(a.item() if isinstance(a, np.generic) else a)
            with LAUNCH_LOCK:
                set_order()
                fault = _fn(gx, gy, bx, *conv)
                if fault:
                    raise RuntimeError(f"{_name}: {_FAULTS[fault]}")
                if TRACE is not None:
                    TRACE.append((_name, tuple(_digest(a) for a in args if isinstance(a, np.ndarray))))
            if on_launch is not None:
                on_launch(_name)

        out[name] = call
    return out


class DeviceArray(np.ndarray):
    """An array of the emulated device: what the stand-in ``cupy`` makes (``asarray``, ``empty``, ``zeros``, ...;
    NumPy keeps the type through slicing, arithmetic and methods) and ``cupy.ndarray`` is. Its kernels take only
    these for their pointer arguments, as CuPy's refuse a NumPy array; ``cupy.asnumpy`` gives a plain ndarray."""


def fake_cupy(build_dir: str | Path | None = None) -> types.ModuleType:
    """A stand-in ``cupy`` module: NumPy arrays, ``RawModule`` kernels compiled by :func:`compile_source`, and
    ``cuda.runtime.getDeviceCount()`` reporting one device."""
    cp = types.ModuleType("cupy")
    for name in ("float32", "float64", "int32", "inf"):
        setattr(cp, name, getattr(np, name))

    def on_device(fn, poison=False):  # an array the stand-in makes is a DeviceArray (a view: no copy)
        def make(*args, **kwargs):
            a = fn(*args, **kwargs)
            if poison and ORDER is not None:  # under the order probe, uninitialised memory holds its poison byte
                ctypes.memset(a.ctypes.data, ORDER[2], a.nbytes)  # a new array: one block of a.nbytes
            return a if type(a) is DeviceArray else a.view(DeviceArray)

        return make

    cp.asarray, cp.ascontiguousarray, cp.stack, cp.zeros = (on_device(f) for f in (np.asarray, np.ascontiguousarray,
                                                                                     np.stack, np.zeros))
    cp.empty, cp.empty_like = on_device(np.empty, poison=True), on_device(np.empty_like, poison=True)

    def asnumpy(a, *args, **kwargs):
        out = np.asarray(a, *args, **kwargs)  # a plain ndarray (a view of the device array)
        if TRACE is not None:
            with LAUNCH_LOCK:
                TRACE.append(("asnumpy", (_digest(out),)))
        return out

    cp.asnumpy = asnumpy
    cp.ndarray = DeviceArray
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
            self._kernels = compile_source(code, build_dir=build_dir, on_launch=on_launch, device_type=DeviceArray)

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
