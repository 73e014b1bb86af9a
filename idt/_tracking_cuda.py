r"""CUDA kernel (CuPy ``RawModule``): one tracking step of a batch of points, the twin of
:func:`idtfv.idt._tracking_nb.track_step`.

A point :math:`p` moves to :math:`p + f(\mathrm{round}(p))` (the median-filtered flow read at the rounded,
clamped pixel; ``rintf`` rounds half to even as ``np.rint``); the camera-compensated flow :math:`f_w` at that pixel
is the step's displacement; a point that leaves the open frame ``(0, w) x (0, h)`` dies. One thread per point,
float32 additions in the CPU's order, so the result is **bit-identical** to the Numba kernel's.

:func:`track_step` keeps the Numba kernel's signature and in-place contract on host arrays (the track pool stays
on the host): it gathers the live tracks' current points, runs the kernel, and writes the moved points, the
displacements and the step counts back. Without a GPU the kernel runs on the CPU through ``tests/_cuda_on_cpu.py``
(``tests/test_tracking_cuda.py``). Importing this module needs CuPy.
"""

from __future__ import annotations

import functools

import cupy as cp
import numpy as np

__all__ = ["track_step", "track_points", "module"]

_BLOCK = 128

_SOURCE = r"""
extern "C" {

// One thread per point i: pts (n, 2) [x, y]; flow, flow_w (h, w, 2). Outputs nxt (n, 2), disp (n, 2), alive (n,).
__global__ void track_points(const float* pts, int n, const float* flow, const float* flow_w, int h, int w,
                             float* nxt, float* disp, int* alive) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float px = pts[2 * i];
    float py = pts[2 * i + 1];
    float rx = rintf(px);  // cvRound: nearest, ties to even
    float ry = rintf(py);
    int x = rx < 0.0f ? 0 : (rx > (float)(w - 1) ? w - 1 : (int)rx);
    int y = ry < 0.0f ? 0 : (ry > (float)(h - 1) ? h - 1 : (int)ry);
    long long k = 2 * ((long long)y * w + x);
    float nx = px + flow[k];
    float ny = py + flow[k + 1];
    nxt[2 * i] = nx;
    nxt[2 * i + 1] = ny;
    disp[2 * i] = flow_w[k];
    disp[2 * i + 1] = flow_w[k + 1];
    alive[i] = (nx <= 0.0f || nx >= (float)w || ny <= 0.0f || ny >= (float)h) ? 0 : 1;
}

}
"""


@functools.lru_cache(maxsize=None)
def module():
    """The compiled ``cupy.RawModule`` (one per process)."""
    return cp.RawModule(code=_SOURCE, options=("--fmad=false",))


def track_points(points, flow, flow_w):
    """Move points by one frame on the device.

    Parameters
    ----------
    points : (n, 2) float32
        Current points ``[x, y]`` (NumPy or CuPy).
    flow, flow_w : (h, w, 2) float32
        Median-filtered and camera-compensated flow of this scale (NumPy or CuPy).

    Returns
    -------
    nxt, disp : (n, 2) float32 CuPy arrays
        The moved points and the compensated displacement read at the rounded point (garbage where not alive).
    alive : (n,) int32 CuPy array
        1 where the moved point is inside the open frame.
    """
    pts = cp.ascontiguousarray(cp.asarray(points, dtype=cp.float32))
    f = cp.ascontiguousarray(cp.asarray(flow, dtype=cp.float32))
    fw = cp.ascontiguousarray(cp.asarray(flow_w, dtype=cp.float32))
    n = int(pts.shape[0])
    h, w = int(f.shape[0]), int(f.shape[1])
    nxt = cp.empty((n, 2), cp.float32)
    disp = cp.empty((n, 2), cp.float32)
    alive = cp.empty(n, cp.int32)
    if n:
        module().get_function("track_points")(
            ((n + _BLOCK - 1) // _BLOCK,), (_BLOCK,),
            (pts, np.int32(n), f, fw, np.int32(h), np.int32(w), nxt, disp, alive),
        )  # fmt: skip
    return nxt, disp, alive


def track_step(slots, index, pos, disp, flow, flow_w, alive):
    """The device twin of :func:`idtfv.idt._tracking_nb.track_step`, same arguments and in-place effects.

    ``slots (n,)`` int64 pool rows, ``index (C,)`` int32, ``pos (C, L+1, 2)``, ``disp (C, L, 2)`` float32 host
    arrays (updated for the tracks that stay alive), ``flow``, ``flow_w (h, w, 2)`` float32, ``alive (n,)`` bool
    (output).
    """
    steps = index[slots]
    nxt, d, ok = track_points(pos[slots, steps], flow, flow_w)
    ok = cp.asnumpy(ok).astype(bool)
    alive[:] = ok
    if ok.any():
        rows, i = slots[ok], steps[ok]
        pos[rows, i + 1] = cp.asnumpy(nxt)[ok]
        disp[rows, i] = cp.asnumpy(d)[ok]
        index[rows] = i + 1
