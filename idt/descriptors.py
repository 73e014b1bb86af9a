r"""HOG, HOF and MBH descriptors of improved dense trajectories from integral histograms.

Wang & Schmid, "Dense Trajectories and Motion Boundary Descriptors for Action Recognition" (IJCV 2013) and
"Action Recognition with Improved Trajectories" (ICCV 2013). Per frame and per pyramid scale, four orientation
integral histograms are built once (:func:`frame_histograms`); every trajectory point then reads the
:math:`n_\sigma \times n_\sigma` = 2x2 cells of its :math:`N \times N` = 32x32 patch from them
(:func:`cell_descriptors`); a finished track of :math:`L` = 15 frames averages its per-frame blocks over
:math:`n_\tau` = 3 temporal cells (:func:`temporal_pool`).

Channels (``B`` orientation bins over 360 degrees, magnitude split linearly between the two nearest bins):

- HOG: gradient of the grey frame ``I`` (centred differences), ``B = 8``.
- HOF: the camera-compensated flow :math:`\omega = (u, v)` itself, ``B = 8`` plus a zero-motion bin (vectors with
  :math:`|\omega| \le` ``min_flow`` add 1 to it), 9 bins.
- MBHx / MBHy: gradients of :math:`u` and of :math:`v`, ``B = 8`` each.

Per-frame block of a point: the cell sums (x-cell outer, y-cell inner, bin fastest), each clipped at 0 and
increased by :math:`\epsilon` (``layout.epsilon``, 0.05 as in LEAR's code), L1-normalised and square-rooted
(RootSIFT), so its squared L2 norm is exactly 1. The track descriptor concatenates the means of these blocks over
each temporal cell (temporal cell outer), so e.g. a 96-d HOG has squared norm :math:`\le 3`, with equality when the
patch is the same on all frames of each cell.

Because of :math:`\epsilon`, the grey frame's units matter: pass it on LEAR's 0..255 scale.

A point's patch has its top-left corner at ``clamp(round(x) - N/2, 0, w - N)`` (same for y) and cell (i, j) covers
columns ``[x0 + i N/2, x0 + (i+1) N/2)``. (LEAR's code reads its integral image at the patch corners themselves,
which shifts its cells by one pixel to the bottom right; the difference is immaterial for the descriptors'
statistics and keeps every read inside the image.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from idtfv.errors import ParameterError
from idtfv.idt import _histograms_nb as _nb

__all__ = [
    "DescriptorLayout", "FrameHistograms", "frame_histograms", "hog_histogram", "cell_descriptors",
    "cell_descriptor_rows", "stream_cell_descriptors", "temporal_pool", "patch_corners", "level_histograms",
]

#: LEAR adds this to every cell-bin sum before the L1 normalisation; it keeps empty (texture-less,
#: motionless) patches from producing an undefined block and makes them uniform instead.
LEAR_EPSILON = 0.05


@dataclass(frozen=True)
class DescriptorLayout:
    """Geometry and binning of the trajectory-aligned descriptors.

    Parameters
    ----------
    patch : int
        N, side of the square patch around a point, in pixels (32).
    nx_cells, ny_cells : int
        :math:`n_\\sigma`, spatial cells along x and y (2, 2); ``patch`` must be divisible by both.
    nt_cells : int
        :math:`n_\\tau`, temporal cells of a track (3).
    hog_bins, mbh_bins : int
        Orientation bins of HOG and of each MBH component (8).
    hof_bins : int
        HOF bins *including* the zero-motion bin (9 = 8 orientations + 1).
    min_flow : float
        Flow magnitude (pixels) at or below which a vector counts in the HOF zero bin (0.4).
    epsilon : float
        Added to every cell-bin sum before the L1 normalisation (LEAR: 0.05; 0 gives an all-zero block for an
        empty patch).
    """

    patch: int = 32
    nx_cells: int = 2
    ny_cells: int = 2
    nt_cells: int = 3
    hog_bins: int = 8
    hof_bins: int = 9
    mbh_bins: int = 8
    min_flow: float = 0.4
    epsilon: float = LEAR_EPSILON

    def __post_init__(self):
        for name in ("patch", "nx_cells", "ny_cells", "nt_cells", "hog_bins", "mbh_bins"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ParameterError(f"DescriptorLayout.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.hof_bins, (int, np.integer)) or self.hof_bins < 2:
            raise ParameterError(
                f"DescriptorLayout.hof_bins counts the zero-motion bin and must be an integer >= 2, got {self.hof_bins!r}"
            )
        if self.patch % self.nx_cells or self.patch % self.ny_cells:
            raise ParameterError(
                f"DescriptorLayout.patch={self.patch} must be divisible by nx_cells={self.nx_cells} and "
                f"ny_cells={self.ny_cells}; pick a patch size that is a multiple of both"
            )
        if not self.min_flow >= 0 or not self.epsilon >= 0:
            raise ParameterError(
                f"DescriptorLayout.min_flow and epsilon must be >= 0, got {self.min_flow!r} and {self.epsilon!r}"
            )

    def dims(self) -> dict[str, int]:
        """Per-frame block length of each descriptor, e.g. ``{"hog": 32, "hof": 36, "mbhx": 32, "mbhy": 32}``."""
        cells = self.nx_cells * self.ny_cells
        return {
            "hog": cells * self.hog_bins,
            "hof": cells * self.hof_bins,
            "mbhx": cells * self.mbh_bins,
            "mbhy": cells * self.mbh_bins,
        }


class FrameHistograms(NamedTuple):
    """Integral histograms of one frame at one scale, each ``(h+1, w+1, B)`` float32 (see module docstring)."""

    hog: np.ndarray
    hof: np.ndarray
    mbhx: np.ndarray
    mbhy: np.ndarray


def _as_f32c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _check_device(device: str, where: str) -> None:
    if device not in ("cpu", "cuda"):
        raise ParameterError(f"{where}: device must be 'cpu' or 'cuda' (resolve 'auto' with "
                             f"idtfv.idt.device.resolve_device first), got {device!r}")


def _writable(a, shape) -> bool:
    return (isinstance(a, np.ndarray) and a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous
            and a.flags.writeable)


def _gray3(gray: np.ndarray) -> np.ndarray:
    # uint8 frames are converted pixel by pixel inside the kernels (the same float32 values, no copy)
    return (np.ascontiguousarray(gray) if gray.dtype == np.uint8 else _as_f32c(gray))[:, :, None]


def hog_histogram(gray: np.ndarray, *, layout: DescriptorLayout = DescriptorLayout(),
                  out: np.ndarray | None = None) -> np.ndarray:
    """The HOG integral histogram of one frame at one scale: :func:`frame_histograms`' ``hog``, bit for bit,
    without the flow (the extractor's front thread makes it ahead, ``threads > 1``; pass it back as
    ``frame_histograms(..., hog=)``).

    Parameters
    ----------
    gray : (h, w) float32 or uint8
        The frame at this scale, grey levels on a 0..255 scale (at least 2x2).
    layout : DescriptorLayout
    out : (h+1, w+1, hog_bins) float32, optional
        An array to overwrite (used when its shape and dtype fit).

    Returns
    -------
    (h+1, w+1, hog_bins) float32
    """
    gray = np.asarray(gray)
    if gray.ndim != 2 or min(gray.shape) < 2:
        raise ParameterError(f"hog_histogram: gray must be a 2-D (h, w) image of at least 2x2 pixels, got shape "
                             f"{gray.shape}")
    h, w = gray.shape
    shape = (h + 1, w + 1, layout.hog_bins)
    hog = out if _writable(out, shape) else np.empty(shape, np.float32)
    _nb.hog_integral_histogram(_gray3(gray), layout.hog_bins, hog)
    return hog


def frame_histograms(gray: np.ndarray, flow: np.ndarray, *, layout: DescriptorLayout = DescriptorLayout(),
                     out: FrameHistograms | None = None, device: str = "cpu",
                     hog: np.ndarray | None = None) -> FrameHistograms:
    """Build the HOG, HOF, MBHx and MBHy integral histograms of one frame at one scale.

    Parameters
    ----------
    gray : (h, w) float32 or uint8
        The frame I_t at this scale, grey levels on a 0..255 scale.
    flow : (h, w, 2) float32
        Camera-compensated flow :math:`\\omega_t` from frame t to t+1 at this scale, (u, v) in pixels.
    layout : DescriptorLayout
        Bin counts and the HOF zero-motion threshold.
    out : FrameHistograms, optional
        Arrays to overwrite (e.g. this scale's histograms of the previous frame, once no longer needed); saves
        allocating ~10 MB per 320x240 frame, whose first-touch page faults cost about as much as the kernels.
        Used only if every array has the right shape and dtype; otherwise new arrays are allocated.
    device : str
        ``"cpu"`` (Numba) or ``"cuda"`` (CuPy, :mod:`idtfv.idt._histograms_cuda`; ``gray`` and ``flow`` may then
        be NumPy or CuPy arrays, and the histograms are CuPy arrays left on the device, bit-identical to the CPU's).
    hog : (h+1, w+1, hog_bins) float32, optional
        ``gray``'s :func:`hog_histogram`, made already: returned as the result's ``hog`` (not copied), and only
        the flow's three histograms are made (CPU only; ``out``'s ``hog`` is then not used).

    Returns
    -------
    FrameHistograms
        ``hog (h+1, w+1, hog_bins)``, ``hof (h+1, w+1, hof_bins)``, ``mbhx``/``mbhy (h+1, w+1, mbh_bins)``,
        float32; ``H[y+1, x+1, b]`` sums bin b over rows <= y and columns <= x.
    """
    _check_device(device, "frame_histograms")
    if device == "cuda":
        if hog is not None:
            raise ParameterError("frame_histograms: hog= is for the CPU; on the device all four are made together")
        return _frame_histograms_cuda(gray, flow, layout, out)
    gray = np.asarray(gray)
    flow = np.asarray(flow)
    _check_frame(gray, flow)
    h, w = gray.shape
    flow = _as_f32c(flow)
    shapes = ((h + 1, w + 1, layout.hog_bins), (h + 1, w + 1, layout.hof_bins), (h + 1, w + 1, layout.mbh_bins),
              (h + 1, w + 1, layout.mbh_bins))
    if hog is not None and not (isinstance(hog, np.ndarray) and hog.shape == shapes[0] and hog.dtype == np.float32):
        raise ParameterError(f"frame_histograms: hog must be gray's hog_histogram, a {shapes[0]} float32 array; "
                             f"got {type(hog).__name__} {getattr(hog, 'shape', '')}")
    mine = slice(0 if hog is None else 1, 4)  # the arrays made here
    if out is not None and all(_writable(a, s) for a, s in zip(out[mine], shapes[mine])):
        arrays = list(out)
    else:
        arrays = [np.empty(s, np.float32) for s in shapes]
    if hog is None:
        _nb.frame_integral_histograms(_gray3(gray), flow, layout.hog_bins, layout.hof_bins - 1, layout.mbh_bins,
                                      np.float32(layout.min_flow), *arrays)
    else:
        arrays[0] = hog
        _nb.motion_integral_histograms(flow, layout.hof_bins - 1, layout.mbh_bins, np.float32(layout.min_flow),
                                       *arrays[1:])
    return FrameHistograms(*arrays)


def _frame_histograms_cuda(gray, flow, layout: DescriptorLayout, out) -> FrameHistograms:
    from idtfv.idt import _histograms_cuda

    _check_frame(gray, flow)
    return FrameHistograms(*_histograms_cuda.frame_histograms(
        gray, flow, hog_bins=layout.hog_bins, hof_bins=layout.hof_bins, mbh_bins=layout.mbh_bins,
        min_flow=layout.min_flow, out=out))


def level_histograms(grays, flows, *, layout: DescriptorLayout = DescriptorLayout(), out=None):
    """:func:`frame_histograms` of several levels of a frame on the device (``device="cuda"`` only), in three
    launches for all levels (:func:`idtfv.idt._histograms_cuda.level_histograms`), bit-identical to each level's.

    Parameters
    ----------
    grays : sequence of (h_k, w_k) uint8 or float32 CuPy arrays
        The levels, on a 0..255 scale.
    flows : sequence of (h_k, w_k, 2) float32 CuPy arrays
        Their camera-compensated flows.
    layout : DescriptorLayout
        Bins and HOF's zero-motion threshold.
    out : LevelHistograms, optional
        The previous call's, overwritten when the levels' sizes are the same.

    Returns
    -------
    idtfv.idt._histograms_cuda.LevelHistograms
        ``levels[k]`` holds level k's ``(hog, hof, mbhx, mbhy)`` CuPy arrays, ``(h_k+1, w_k+1, B)`` float32.
    """
    from idtfv.idt import _histograms_cuda

    for gray, flow in zip(grays, flows):
        _check_frame(gray, flow)
    return _histograms_cuda.level_histograms(grays, flows, hog_bins=layout.hog_bins, hof_bins=layout.hof_bins,
                                             mbh_bins=layout.mbh_bins, min_flow=layout.min_flow, out=out)


def _check_frame(gray, flow) -> None:
    """gray (h, w) and flow (h, w, 2), at least 2x2 (NumPy or CuPy arrays: only their shapes are read)."""
    if gray.ndim != 2:
        raise ParameterError(f"frame_histograms: gray must be a 2-D (h, w) image, got shape {gray.shape}")
    h, w = gray.shape
    if flow.shape != (h, w, 2):
        raise ParameterError(
            f"frame_histograms: flow must have shape (h, w, 2) = {(h, w, 2)} to match gray, got {flow.shape}"
        )
    if h < 2 or w < 2:
        raise ParameterError(f"frame_histograms: the image must be at least 2x2 pixels, got {w}x{h}")


def patch_corners(points: np.ndarray, width: int, height: int, *, patch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners of the points' patches: ``clamp(round(x) - patch // 2, 0, width - patch)``, same for y.

    Rounding is to the nearest integer, ties to even (as OpenCV's ``cvRound``).

    Parameters
    ----------
    points : (n, 2) float
        Point positions ``[x, y]`` in pixels at this scale.
    width, height : int
        Image size at this scale (each must be >= ``patch``).

    Returns
    -------
    x0, y0 : (n,) int64
    """
    r = np.rint(points).astype(np.int64)
    x0 = np.clip(r[:, 0] - patch // 2, 0, width - patch)
    y0 = np.clip(r[:, 1] - patch // 2, 0, height - patch)
    return x0, y0


def cell_descriptors(
    hists: FrameHistograms, points: np.ndarray, *, layout: DescriptorLayout = DescriptorLayout(), device: str = "cpu"
) -> dict[str, np.ndarray]:
    """Per-frame descriptor blocks of points, read from one frame's integral histograms.

    Parameters
    ----------
    hists : FrameHistograms
        From :func:`frame_histograms` for this frame and scale.
    points : (n, 2) float32
        ``[x, y]`` positions at this scale (the track's point on this frame).
    layout : DescriptorLayout
        Patch geometry; must be the one the histograms were built with.
    device : str
        ``"cpu"`` (Numba) or ``"cuda"``: the histograms are then CuPy arrays (``frame_histograms(...,
        device="cuda")``) and the blocks are gathered on the device and copied back in one transfer.

    Returns
    -------
    dict
        ``{"hog": (n, 32), "hof": (n, 36), "mbhx": (n, 32), "mbhy": (n, 32)}`` float32 NumPy arrays (for the
        default layout); each row has squared L2 norm 1 (or 0 when ``epsilon = 0`` and the patch is empty).
    """
    both = cell_descriptor_rows(hists, points, layout=layout, device=device)
    cells = layout.nx_cells * layout.ny_cells
    bins = {"hog": layout.hog_bins, "hof": layout.hof_bins, "mbhx": layout.mbh_bins, "mbhy": layout.mbh_bins}
    bounds = np.cumsum([0] + [cells * nb for nb in bins.values()])
    return {name: np.ascontiguousarray(both[:, a:b]) for name, a, b in zip(bins, bounds[:-1], bounds[1:])}


def _image_size(hists: FrameHistograms, layout: DescriptorLayout, caller: str) -> tuple[int, int]:
    """``(h, w)`` of the image of the integral histograms ``hists``; a :class:`ParameterError` naming ``caller``
    when it is smaller than ``layout``'s patch (no block fits)."""
    h, w = hists.hog.shape[0] - 1, hists.hog.shape[1] - 1
    if w < layout.patch or h < layout.patch:
        raise ParameterError(f"{caller}: the image ({w}x{h}) is smaller than the {layout.patch}-px patch; stop the "
                             "scale pyramid before this level")
    return h, w


def cell_descriptor_rows(
    hists: FrameHistograms, points: np.ndarray, *, layout: DescriptorLayout = DescriptorLayout(), device: str = "cpu"
) -> np.ndarray:
    """:func:`cell_descriptors`' four blocks side by side in one array (one kernel call on the CPU).

    Returns
    -------
    (n, D) float32
        HOG | HOF | MBHx | MBHy blocks of each point (D = 132 for the default layout), as
        ``np.concatenate([blocks[k] for k in ("hog", "hof", "mbhx", "mbhy")], axis=1)`` of :func:`cell_descriptors`.
    """
    _check_device(device, "cell_descriptors")
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ParameterError(f"cell_descriptors: points must have shape (n, 2) as [x, y], got {points.shape}")
    if not np.isfinite(points).all():
        raise ParameterError("cell_descriptors: points contain NaN or infinite coordinates; drop those tracks first")
    h, w = _image_size(hists, layout, "cell_descriptors")
    expected = {"hog": layout.hog_bins, "hof": layout.hof_bins, "mbhx": layout.mbh_bins, "mbhy": layout.mbh_bins}
    for name, nb in expected.items():
        got = getattr(hists, name).shape
        if got != (h + 1, w + 1, nb):
            raise ParameterError(
                f"cell_descriptors: hists.{name} has shape {got}, expected {(h + 1, w + 1, nb)}; "
                "build the histograms with the same layout"
            )
    cells = layout.nx_cells * layout.ny_cells
    n = points.shape[0]
    if device == "cuda":
        from idtfv.idt import _histograms_cuda

        return _histograms_cuda.gather_all([getattr(hists, name) for name in expected], points,
                                           patch=layout.patch, nx_cells=layout.nx_cells, ny_cells=layout.ny_cells,
                                           epsilon=float(layout.epsilon))
    out = np.empty((n, cells * sum(expected.values())), np.float32)
    _nb.gather_all_blocks(*hists, np.ascontiguousarray(points, np.float32), layout.patch, layout.nx_cells,
                          layout.ny_cells, float(layout.epsilon), out)
    return out


def stream_cell_descriptors(pool, rows: np.ndarray, gray: np.ndarray, flow: np.ndarray, points: np.ndarray, *,
                            layout: DescriptorLayout = DescriptorLayout(), hog: np.ndarray | None = None) -> None:
    """Add the points' descriptor blocks to their tracks' temporal-cell sums: ``pool.store_descriptors(rows,
    cell_descriptor_rows(frame_histograms(gray, flow), points))`` in one pass over the frame's rows, without the
    histograms (:func:`idtfv.idt._histograms_nb.stream_sum_blocks`): the same temporal-cell sums, bit for bit.
    The integral rows are kept in a ring of ``patch + 1`` rows (1.4 MB for a 320-px-wide level, in the cache,
    against the histograms' 10 MB) and each point's block is read as soon as its patch's last row is made. The
    extractor's step 5 on the CPU.

    Parameters
    ----------
    pool : idtfv.idt.tracking.TrackPool
        Its ``desc (C, n_t, D)`` sums (D the layout's four block widths), ``index`` and ``per_cell``.
    rows : (n,) int64
        Pool rows of the tracks that just took a step (distinct).
    gray : (h, w) uint8 or float32
        The frame at this scale, grey levels on a 0..255 scale, at least ``patch`` x ``patch`` pixels.
    flow : (h, w, 2) float32
        Its camera-compensated flow at this scale, (u, v) in pixels.
    points : (n, 2) float32, C-contiguous
        The tracks' points (finite) where the blocks are read: their points before the step.
    layout : DescriptorLayout
    hog : (h+1, w+1, hog_bins) float32, C-contiguous, optional
        ``gray``'s :func:`hog_histogram`, made already (the extractor's front thread, ``threads > 1``): read
        instead of making the HOG rows here.
    """
    n = len(rows)
    if n == 0:
        return
    gray, flow = np.asarray(gray), np.asarray(flow)
    h, w = gray.shape if gray.ndim == 2 else (-1, -1)
    dim = sum(layout.dims().values())
    problems = [
        f"gray must be a 2-D (h, w) image, got shape {gray.shape}" if gray.ndim != 2 else "",
        f"flow must have shape (h, w, 2) = {(h, w, 2)}, got {flow.shape}"
        if gray.ndim == 2 and flow.shape != (h, w, 2) else "",
        f"the image ({w}x{h}) must be at least the {layout.patch}-px patch (stop the scale pyramid before this "
        "level)" if gray.ndim == 2 and min(h, w) < layout.patch else "",
        f"points must be a C-contiguous (n, 2) = {(n, 2)} float32 array, one per row; got {points.dtype} "
        f"{points.shape}" if (points.shape != (n, 2) or points.dtype != np.float32
                             or not points.flags.c_contiguous) else "",
        f"rows must be (n,) = ({n},) int64, got {rows.dtype} {rows.shape}" if (rows.dtype != np.int64
                                                                                or rows.ndim != 1) else "",
        f"pool.desc must be a C-contiguous (C, n_t, {dim}) float32 array for this layout, got {pool.desc.dtype} "
        f"{pool.desc.shape}" if pool.desc.ndim != 3 or pool.desc.shape[2] != dim or pool.desc.dtype != np.float32
        or not pool.desc.flags.c_contiguous else "",
        f"hog must be gray's hog_histogram, a C-contiguous {(h + 1, w + 1, layout.hog_bins)} float32 array; got "
        f"{type(hog).__name__} {getattr(hog, 'shape', '')}" if hog is not None and not (
            isinstance(hog, np.ndarray) and hog.shape == (h + 1, w + 1, layout.hog_bins)
            and hog.dtype == np.float32 and hog.flags.c_contiguous) else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise ParameterError("stream_cell_descriptors: " + "; ".join(problems))
    if hog is None:
        hog = np.empty((0, w + 1, layout.hog_bins), np.float32)  # the HOG rows are made in the kernel
    _nb.stream_sum_blocks(_gray3(gray), _as_f32c(flow), hog, layout.hog_bins, layout.hof_bins - 1, layout.mbh_bins,
                          np.float32(layout.min_flow), points, layout.patch, layout.nx_cells, layout.ny_cells,
                          float(layout.epsilon), pool.desc, pool.index, rows, pool.per_cell)


def temporal_pool(per_frame: np.ndarray, nt_cells: int = 3) -> np.ndarray:
    """Average per-frame blocks over temporal cells.

    Parameters
    ----------
    per_frame : (n, L, d) float32
        The blocks of the n tracks on each of their L frames.
    nt_cells : int
        :math:`n_\\tau`; each cell averages ``L // nt_cells`` consecutive frames, and the last
        ``L - nt_cells * (L // nt_cells)`` frames are dropped.

    Returns
    -------
    (n, nt_cells * d) float32
        Temporal cell outer: ``out[:, t * d:(t + 1) * d]`` is the mean of cell t.
    """
    per_frame = np.asarray(per_frame)
    if per_frame.ndim != 3:
        raise ParameterError(f"temporal_pool: per_frame must have shape (n, L, d), got {per_frame.shape}")
    n, length, d = per_frame.shape
    if not isinstance(nt_cells, (int, np.integer)) or nt_cells < 1:
        raise ParameterError(f"temporal_pool: nt_cells must be a positive integer, got {nt_cells!r}")
    if length < nt_cells:
        raise ParameterError(
            f"temporal_pool: a track of L={length} frames cannot fill nt_cells={nt_cells} temporal cells; "
            "use longer tracks or fewer cells"
        )
    step = length // nt_cells
    cells = per_frame[:, : nt_cells * step].reshape(n, nt_cells, step, d)
    return cells.mean(axis=2, dtype=np.float64).astype(np.float32).reshape(n, nt_cells * d)
