"""Every option of the improved-dense-trajectory extractor, with LEAR's reference defaults.

The defaults reproduce LEAR's ``DenseTrackStab`` run as ``-L 15 -W 5 -N 32 -s 2 -t 3 -A 8 -I 1`` (Wang & Schmid,
ICCV 2013). Symbols: :math:`L` track length, :math:`W` sampling stride, :math:`N` patch size,
:math:`n_\\sigma = n_\\tau` cells, :math:`S` number of scales with factor :math:`1/\\sqrt 2`.

Two differences from the reference are forced by this OpenCV build and documented in ``info``:
SURF is absent (nonfree), so ``matcher="auto"`` falls back to AKAZE; and ``warp_flow`` chooses how the
camera-compensated flow is obtained (see :class:`IDTParams`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

from idtfv.errors import ParameterError
from idtfv.idt.device import DEVICES
from idtfv.options import choices_of, field_error, option

__all__ = ["IDTParams", "PRESETS", "FLOW_METHODS", "MATCHERS", "WARP_FLOW_MODES", "FARNEBACK_IMPLS",
           "FARNEBACK_WINDOWS", "WORKING_WIDTH", "MAX_TRACK_LENGTH", "MAX_ORB_FEATURES",
           "MAX_FARNEBACK_ITERATIONS", "MAX_FARNEBACK_WINSIZE", "MEDIAN_KSIZES", "MAX_DESCRIPTOR_CELLS"]

FLOW_METHODS = ("farneback", "tvl1", "dis")
MATCHERS = ("auto", "surf", "orb", "akaze", "sift", "flow")
WARP_FLOW_MODES = ("recompute", "subtract", "refine")
FARNEBACK_IMPLS = ("auto", "numba", "opencv")
FARNEBACK_WINDOWS = ("box", "gaussian")
#: Upper bound of ``track_length``: the track pools keep the L+1 points and L steps of every live track from the
#: start (about 28 KB per unit of L over a 320x240 video's levels, touched as the tracks are born), so a mistyped
#: ``--track-length 300000`` took 8.4 GB and 25 s before "no trajectories". LEAR's L is 15; 1000 is ~33 s at 30 fps.
MAX_TRACK_LENGTH = 1000
#: Upper bound of ``orb_features``: OpenCV's ORB reserves room for that many keypoints up front (1e9 was
#: ``cv2.error: std::bad_alloc``); a 640-px frame yields a few thousand.
MAX_ORB_FEATURES = 1_000_000
#: Upper bounds of ``farneback_iterations`` and ``farneback_winsize``: the solver's time grows with both (per
#: pixel: iterations x window taps), and a mistyped ``--farneback-iterations 100000`` ran on and on with nothing to
#: say. LEAR's values are 2 and 10 (OpenCV's examples 3 and 15); at the bounds a 20-frame 160x120 clip takes ~3 s
#: (100 iterations) and ~1 s (a 255-px window) instead of 0.7 s.
MAX_FARNEBACK_ITERATIONS = 100
MAX_FARNEBACK_WINSIZE = 255
#: Upper bound of the cells of one trajectory's descriptor blocks, ``nxy_cells**2 * nt_cells`` (LEAR: 2 x 2 x 3 =
#: 12): every live track holds 33 floats per cell from its birth, so ``--nxy-cells 32`` (one pixel per cell) took
#: 2.9 GB on 40 frames of a 320x240 clip and grows with the frame's area to an out-of-memory kill; at 512 cells a
#: track holds 68 KB.
MAX_DESCRIPTOR_CELLS = 512
#: The 5x5 median is the widest the flow's median filter takes (OpenCV's float medianBlur: 3 or 5; 1 = off).
MEDIAN_KSIZES = (1, 3, 5)
#: The extractor's default working width (``resize_width=None``): wider frames are shrunk to it. Peak memory grows
#: with the frame's area (about 1 KB per pixel: pyramid, flows, integral histograms and the live tracks' descriptor
#: sums), so 640 px bounds a worker to about 0.5 GB for landscape input of any size (a 4000x3000 frame at full size
#: took 8.9 GB); the height is not bounded: a portrait 720x1280 video is extracted at 640x1138, 3.2 times the pixels
#: (memory and time) of the same clip as 1280x720 (640x360). UCF101, HMDB51, KTH and the reference clips (at most
#: 640 px wide) are processed at their own size.
WORKING_WIDTH = 640


@dataclass(frozen=True)
class IDTParams:
    """Options of :func:`idtfv.idt.extract` (frozen; compare, hash and serialise with :meth:`to_dict`).

    Parameters
    ----------
    track_length : int
        :math:`L`, steps per trajectory (a finished track has L+1 points and L descriptor samples);
        1 .. :data:`MAX_TRACK_LENGTH`.
    stride : int
        :math:`W`, dense sampling step in pixels on every scale.
    scales : int
        Maximum number of spatial scales; fewer are used so the smaller side stays >= ``patch``.
    scale_factor : float
        Ratio between consecutive scales (:math:`\\sqrt 2`).
    patch : int
        :math:`N`, side of the descriptor patch in pixels at the track's scale.
    nxy_cells, nt_cells : int
        :math:`n_\\sigma`, :math:`n_\\tau` (2 and 3): the descriptor tube's cell grid, at most
        :data:`MAX_DESCRIPTOR_CELLS` cells (:math:`n_\\sigma^2 n_\\tau`).
    quality : float
        A grid point is kept if its min-eigenvalue response > ``quality`` x the frame maximum.
    min_var, max_var : float
        Pruning: drop a track whose x and y standard deviations are both < ``min_var`` or either > ``max_var`` (px).
    max_dis, max_dis_ratio : float
        Pruning: drop a track whose largest step exceeds ``max_dis`` px and ``max_dis_ratio`` x its length.
    min_camera_disp : float
        iDT pruning: drop a track whose largest camera-compensated step is <= this (px).
    init_gap : int
        Re-sample empty grid cells every ``init_gap`` frames (LEAR ``-I``).
    flow : str
        ``"farneback"`` (reference), ``"tvl1"`` (:mod:`idtfv.idt.flow`) or ``"dis"`` (OpenCV DIS, fast preset).
    farneback_poly_n, farneback_poly_sigma, farneback_winsize, farneback_iterations
        Farnebäck's polynomial expansion and solver settings (7, 1.5, 10, 2 as in the reference); the window at
        most :data:`MAX_FARNEBACK_WINSIZE` px, at most :data:`MAX_FARNEBACK_ITERATIONS` iterations per level.
    dis_preset : int
        OpenCV ``DISOpticalFlow`` preset (0 ultrafast, 1 fast, 2 medium) for ``flow="dis"``.
    dis_finest_scale : int
        DIS's finest pyramid level (0 = full resolution). The presets' own value (2: flow at 1/4 resolution)
        underestimates small motions and left no trajectory on the 160x120 KTH clip; 1 is the default here.
    dis_per_level : bool
        Solve DIS on every pyramid level (True) or on level 0 only, resizing its flow to the other levels.
    median_ksize : int
        Median filter (``cv2.medianBlur``) applied to each flow channel on each scale: 1 (off), 3 or 5.
    farneback_impl : str
        ``"auto"`` or ``"numba"`` (the project's Numba Farnebäck :class:`idtfv.idt.flow.FarnebackPyramidFlow`, which
        reuses the previous frame's expansions) or ``"opencv"``.
    farneback_window : str
        Window weighting of Farnebäck's displacement estimate: ``"gaussian"`` (default: with it the MBH mean
        profiles on the KTH clip correlate 0.99 with LEAR's, against 0.78-0.88 with ``"box"``, OpenCV's default
        flags) or ``"box"``.
    camera_motion : bool
        Estimate a homography per frame pair and compensate camera motion (iDT); False gives DT-like output
        without the camera pruning.
    warp_flow : str
        ``"recompute"`` (default, the reference: warp frame t by :math:`H^{-1}`, filling the ``warp_margin`` border
        band from frame t-1, and solve the flow again) or ``"subtract"`` (derive it from the first flow:
        :math:`f_w(x) = H^{-1}(x + f(x)) - x` per scale; one solve fewer, about 13 ms of 63 per 320x240 frame;
        used by the fast preset). Same fidelity to LEAR on vtest and KTH; on the moving-camera carphone clip
        ``"recompute"`` brings the MBHx/MBHy mean-profile correlations from 0.88/0.90 to 0.99/0.97 (see
        ``bench/RESULTS.md``). ``"refine"``: the warped frame as ``"recompute"``, its flow started on every
        level from the ``"subtract"`` flow and refined by one Farnebäck round (about a third less CPU in this
        stage than ``"recompute"``; carphone MBHx/MBHy 0.99/0.97 as ``"recompute"``).
    matcher : str
        Keypoints for the homography: ``"auto"`` (SURF if available, else AKAZE), ``"surf"``, ``"orb"``, ``"akaze"``,
        ``"sift"``, or ``"flow"`` (flow matches only).
    surf_hessian : float
        SURF Hessian threshold (200).
    orb_features : int
        Maximum ORB keypoints per frame (1 .. :data:`MAX_ORB_FEATURES`).
    match_window : int
        Keypoints match only if within this many pixels (LEAR's 25 px window).
    flow_matches : int
        Up to this many ``goodFeaturesToTrack`` points (quality 0.001, distance 3) matched through the flow.
    flow_match_min : float
        A flow match is used only if its flow exceeds this (px). Default 0 (every flow match, which lets the
        static background anchor the homography): a 0.4 px floor lowered the trajectory-shape mean-profile
        correlation with LEAR on the static-camera KTH clip from 0.90 to 0.39 (see ``bench/RESULTS.md``).
    ransac_threshold : float
        RANSAC reprojection threshold (px).
    min_inliers : int
        Accept the homography only with more than this many inliers; otherwise identity.
    min_matches : int
        Fit a homography only with more than this many matches (keypoint + flow); otherwise identity (50 as in
        the reference).
    warp_margin : float
        The reference's border rule for the camera-compensated flow: where the source pixel :math:`Hx` of the
        warped frame is not more than ``warp_margin`` px inside frame t, the warped frame takes frame t-1's
        pixel, so the compensated flow is about zero there (also when :math:`H = I`). 5 as in the reference;
        0 with ``warp_flow="subtract"`` keeps the plain :math:`f_w` up to the frame edge.
    still_camera : float
        A frame pair whose homography fitted to the flow matches alone (accepted, more than ``min_inliers``
        inliers) moves no corner of the frame by more than this (px) is a still camera's: that fit is its
        homography, no keypoints are detected or matched, and its compensated flow is derived from the flow
        (as ``warp_flow="subtract"``, without the border band) instead of solved again. Other pairs take the
        reference's steps. 0.25 (a quarter pixel per frame): on the reference clips every fidelity figure stayed
        within 0.002 of ``still_camera=0``, nearly every pair of the static-camera KTH and vtest clips was still
        and none of the moving-camera carphone's, and the extraction of vtest's frames 0-200 took about half the
        CPU (``bench/bench_idt.py``, in-process: the default against ``every-pair``, ``still_camera=0``). 0: every
        pair as the reference.
    resize_width : int or None
        The working width: frames wider than this are shrunk to it (keeping the aspect ratio, ``cv2.INTER_AREA``)
        before extraction. None (default): :data:`WORKING_WIDTH` (640 px), which bounds memory for landscape input
        of any size (not the height of portrait frames: a smaller width bounds those); 0: keep the full size
        (memory grows with the frame area, about 1 KB per pixel). Positions (``meta``'s x and y, ``traj``'s steps,
        ``width``/``height`` in ``info``) are in the working frame's pixels; when
        frames were shrunk, ``info`` also holds ``source_width`` and ``source_height`` (positions in source
        pixels: multiply by ``source_width / width``). Box files (``boxes``) are in source pixels.
    start, end : int, int or None
        Frame range ``[start, end)`` (0-based).
    boxes : str or None
        LEAR-style human bounding-box file (``frame x1 y1 x2 y2 score ...`` per line).
    detect_humans : bool
        Detect people with OpenCV's HOG detector and mask them out of the homography estimate.
    detect_every : int
        With ``detect_humans``: run the detector every k frames (5) and hold its boxes in between. OpenCV's HOG
        detector costs ~26 ms of CPU per 320x240 frame (half of a default frame's extraction); k = 5 brings it
        to ~5 ms per frame, and people move little in 5 frames (0.2 s at 25 frames/s) - the boxes only keep
        keypoints out of the homography fit.
    humans_cache : str or None
        With ``detect_humans`` on a video file: directory caching the detected boxes per video (keyed by its path,
        size and modification time, and the frame range, resize width and ``detect_every``) as a LEAR box file,
        so a second run does not detect again. None: ``$IDTFV_HUMANS_CACHE`` or ``~/.cache/idtfv/humans``;
        ``""``: no cache.
    seed : int
        Seeds every random choice (RANSAC); same input + seed -> same output bytes.
    device : str
        ``"cpu"`` (default), ``"cuda"`` or ``"auto"`` (:func:`idtfv.idt.device.resolve_device`): where the steps
        that have CUDA kernels run (``docs/GPU.md``; with the default Farnebäck the pyramid, flow, warped flow,
        tracking step, descriptors and dense sampling, to the issue's parity bar; the keypoints, homography, track
        pools and pruning stay on the CPU). ``"cuda"`` without
        CuPy and a device is an error at extraction; ``"auto"`` falls back to the CPU with one warning. Left out
        of :meth:`to_dict` when ``"cpu"``.
    threads : int
        Threads for one video (1). With more, a front thread runs up to two frames ahead of the main thread: it
        decodes each frame, detects its human boxes and keypoints, builds its pyramid and the HOG integral
        histograms of its levels, solves its flow from the frame before and estimates the homography; the main
        thread does the warped (camera-compensated) flow, a second solve beside the front thread's next one, and
        the per-level steps (tracking, HOF and MBH histograms, descriptor blocks, pruning, dense sampling). From
        3 threads on those per-level steps are also shared out by level area among the main thread and
        ``threads - 2`` more (the Numba kernels and OpenCV release the GIL). One level of parallelism, for one
        long video on a workstation; the dataset runner parallelises over videos and keeps 1. The commands keep
        OpenCV's own thread pool off (``idtfv.cli.sequential_opencv``), so N threads use N cores. On the device
        (``device="cuda"``) only the host's work runs ahead instead: a decode thread (frames, sizes, human
        masks) and N - 1 host threads (keypoints of several frames at once), every device step on the main
        thread (``docs/GPU.md``, "The host's share"). :func:`~idtfv.idt.extract_to_file`
        (``extract-trajectories``) also compresses an ``.npz`` output on a thread of its writer as the rows come,
        instead of all at the end. The output bytes do not depend on it: it is left out of :meth:`to_dict` when 1
        and out of the extractor's ``info`` always. ``bench/bench_threads.py`` measures the speed-up.
    """

    # Each field's option() holds its command-line help (idtfv.options): extract-trajectories and idtfv features
    # generate their extractor options from these fields.
    track_length: int = option(15, f"L, trajectory length in frames (a multiple of --nt-cells, at most "
                                   f"{MAX_TRACK_LENGTH})", metavar="L")
    stride: int = option(5, "W, dense sampling step in pixels on every scale", metavar="W")
    scales: int = option(8, "maximum number of spatial scales (fewer when the frame gets smaller than --patch)",
                         metavar="S")
    scale_factor: float = option(math.sqrt(2.0), "ratio between consecutive scales", metavar="F", advanced=True)
    patch: int = option(32, "N, side of the descriptor patch in pixels (a multiple of --nxy-cells)", metavar="N",
                        advanced=True)
    nxy_cells: int = option(2, "spatial cells per side of the descriptor patch", metavar="N", advanced=True)
    nt_cells: int = option(3, "temporal cells of the descriptor tube", metavar="N", advanced=True)
    quality: float = option(0.001, "keep a grid point whose min-eigenvalue response exceeds Q x the frame's maximum",
                            metavar="Q", advanced=True)
    min_var: float = option(math.sqrt(3.0), "prune a track whose x and y standard deviations are both below this (px)",
                            metavar="PX", advanced=True)
    max_var: float = option(50.0, "prune a track whose x or y standard deviation exceeds this (px)", metavar="PX",
                            advanced=True)
    max_dis: float = option(20.0, "prune a track whose largest step exceeds this (px) and --max-dis-ratio x its "
                                  "length", metavar="PX", advanced=True)
    max_dis_ratio: float = option(0.7, "see --max-dis", metavar="R", advanced=True)
    min_camera_disp: float = option(1.0, "prune a track whose largest camera-compensated step is at most this (px)",
                                    metavar="PX", advanced=True)
    init_gap: int = option(1, "re-sample empty grid cells every K frames", metavar="K", advanced=True)
    flow: str = option("farneback", "optical flow of the tracks", choices=FLOW_METHODS)
    farneback_poly_n: int = option(7, "Farneback polynomial expansion neighbourhood (5 or 7)", metavar="N",
                                   advanced=True)
    farneback_poly_sigma: float = option(1.5, "Farneback polynomial expansion sigma", metavar="S", advanced=True)
    farneback_winsize: int = option(10, "Farneback averaging window (px)", metavar="PX", advanced=True)
    farneback_iterations: int = option(2, "Farneback iterations per pyramid level", metavar="K", advanced=True)
    farneback_impl: str = option("auto", "Farneback implementation (auto: the project's Numba one when importable)",
                                 choices=FARNEBACK_IMPLS, advanced=True)
    farneback_window: str = option("gaussian", "window weighting of Farneback's displacement estimate",
                                   choices=FARNEBACK_WINDOWS, advanced=True)
    dis_preset: int = option(1, "--flow dis: OpenCV DISOpticalFlow preset (0 ultrafast, 1 fast, 2 medium)",
                             metavar="P", advanced=True)
    dis_finest_scale: int = option(1, "--flow dis: finest pyramid level (0 = full resolution)", metavar="K",
                                   advanced=True)
    dis_per_level: bool = option(False, "--flow dis: solve on every pyramid level instead of resizing level 0's flow",
                                 advanced=True)
    median_ksize: int = option(5, "median filter size applied to each flow channel (1: off, 3 or 5)", metavar="K",
                               advanced=True)
    camera_motion: bool = option(True, "estimate a homography per frame pair and compensate camera motion (iDT); "
                                       "--no-camera-motion gives DT-like output")
    warp_flow: str = option("recompute", "camera-compensated flow: solve again on the warped frame, subtract "
                                         "the homography's motion from the flow (one solve fewer), or refine "
                                         "that on the warped frame (one Farneback round per scale)",
                            choices=WARP_FLOW_MODES)
    matcher: str = option("auto", "keypoints for the camera homography (auto: SURF if available, else AKAZE; "
                                  "flow: flow matches only)", choices=MATCHERS)
    surf_hessian: float = option(200.0, "SURF Hessian threshold", metavar="T", advanced=True)
    orb_features: int = option(1000, f"maximum ORB keypoints per frame (at most {MAX_ORB_FEATURES})", metavar="N",
                               advanced=True)
    match_window: int = option(25, "keypoints match only within this many pixels", metavar="PX", advanced=True)
    flow_matches: int = option(1000, "up to this many corners matched through the flow for the homography",
                               metavar="N", advanced=True)
    flow_match_min: float = option(0.0, "use a flow match only if its flow exceeds this (px)", metavar="PX",
                                   advanced=True)
    ransac_threshold: float = option(1.0, "RANSAC reprojection threshold (px)", metavar="PX", advanced=True)
    min_inliers: int = option(25, "accept the homography only with more inliers than this", metavar="N",
                              advanced=True)
    min_matches: int = option(50, "fit a homography only with more matches than this", metavar="N", advanced=True)
    warp_margin: float = option(5.0, "border band (px) of the warped frame filled from the previous frame",
                                metavar="PX", advanced=True)
    still_camera: float = option(0.25, "a frame pair whose homography from flow matches alone moves no frame "
                                       "corner by more than PX is a still camera's: that fit is its homography, "
                                       "no keypoints, the compensated flow derived from the flow (0: every pair "
                                       "as the reference)", metavar="PX", advanced=True)
    resize_width: int | None = option(None, "working width: shrink frames wider than W to width W first, keeping "
                                            "the aspect ratio (0 keeps the full size)",
                                      metavar="W", none=f"{WORKING_WIDTH}")
    start: int = option(0, "first frame (0-based)", metavar="FRAME")
    end: int | None = option(None, "stop before this frame", metavar="FRAME", none="the last frame")
    boxes: str | None = option(None, "LEAR-style human bounding boxes to mask out of the homography",
                               metavar="FILE", none="none")
    detect_humans: bool = option(False, "detect people with OpenCV's HOG detector and mask them out of the "
                                        "homography (boxes cached per video, see --humans-cache)")
    detect_every: int = option(5, "with --detect-humans: detect every K frames and hold the boxes in between",
                               metavar="K")
    humans_cache: str | None = option(None, "with --detect-humans: directory caching the detected boxes, keyed by "
                                            "the video's path, size and mtime ('' disables)", metavar="DIR",
                                      none="$IDTFV_HUMANS_CACHE or ~/.cache/idtfv/humans")
    seed: int = option(0, "random seed (RANSAC); same input and seed give the same output bytes", metavar="SEED")
    device: str = option("cpu", "where the per-frame kernels run: cpu, cuda (CuPy; an error without a CUDA device) "
                                "or auto (cuda when CuPy sees a device, else cpu with a warning); see docs/GPU.md",
                         choices=DEVICES)
    threads: int = option(1, "threads for one video: a front thread runs ahead (decoding, keypoints, pyramid, "
                             "HOG, flow, homography) while the main thread does the warped flow, tracking and "
                             "descriptors; from 3 on the levels' steps are also shared out; with --device cuda "
                             "only decoding and keypoints run ahead, on N-1 host threads; a .txt.gz output is "
                             "gzipped on a thread of its own (the output bytes do not depend on it; "
                             "OpenCV's own pool stays off, so N threads use about N cores)",
                          metavar="N", advanced=True)

    def __post_init__(self):
        def bad(name, expected):
            raise field_error("IDTParams", name, expected, getattr(self, name), _DEFAULTS[name])

        for f in fields(self):  # NumPy scalars (np.int64(15), np.float32(0.5), np.True_) as the Python ones they hold
            v = getattr(self, f.name)
            if type(v).__module__ == "numpy" and getattr(v, "ndim", None) == 0:
                object.__setattr__(self, f.name, v.item())  # (numpy is not imported here: --help stays light)

        ints = {
            "track_length": 1, "stride": 1, "scales": 1, "patch": 4, "nxy_cells": 1, "nt_cells": 1,
            "init_gap": 1, "farneback_poly_n": 3, "farneback_winsize": 1, "farneback_iterations": 1,
            "median_ksize": 1, "orb_features": 1, "match_window": 1, "flow_matches": 0, "min_inliers": 3,
            "min_matches": 0, "detect_every": 1,
            "start": 0, "seed": 0, "dis_preset": 0, "dis_finest_scale": 0, "threads": 1,
        }
        for name, lo in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                bad(name, f"an integer >= {lo}")
        uppers = {  # sizes whose cost grows with them: name -> (bound, why)
            "track_length": (MAX_TRACK_LENGTH, " (the track pools hold L+1 points of every live track)"),
            "orb_features": (MAX_ORB_FEATURES, ""),
            "farneback_iterations": (MAX_FARNEBACK_ITERATIONS, " (the flow's time grows with it)"),
            "farneback_winsize": (MAX_FARNEBACK_WINSIZE, " (the flow's time grows with it)"),
        }
        for name, (hi, why) in uppers.items():
            if getattr(self, name) > hi:
                bad(name, f"an integer in 1..{hi}{why}")
        if self.track_length % self.nt_cells:
            bad("track_length", f"a multiple of nt_cells={self.nt_cells}")
        if self.patch % self.nxy_cells:
            bad("patch", f"a multiple of nxy_cells={self.nxy_cells}")
        if self.nxy_cells ** 2 * self.nt_cells > MAX_DESCRIPTOR_CELLS:
            why = (f"at most {MAX_DESCRIPTOR_CELLS} cells per descriptor block in all, nxy_cells^2 x nt_cells; each "
                   "live track holds 33 floats per cell")
            if self.nt_cells > MAX_DESCRIPTOR_CELLS:
                bad("nt_cells", f"an integer in 1..{MAX_DESCRIPTOR_CELLS} ({why})")
            bad("nxy_cells", f"an integer in 1..{math.isqrt(MAX_DESCRIPTOR_CELLS // self.nt_cells)} with "
                             f"nt_cells={self.nt_cells} ({why})")
        if self.median_ksize not in MEDIAN_KSIZES:
            bad("median_ksize", "one of " + ", ".join(map(str, MEDIAN_KSIZES)))
        if self.dis_preset > 2:
            bad("dis_preset", "0, 1 or 2")
        if self.farneback_poly_n not in (5, 7):
            bad("farneback_poly_n", "5 or 7")
        floats = {
            "scale_factor": (1.0, False), "quality": (0.0, False), "min_var": (0.0, True), "max_var": (0.0, False),
            "max_dis": (0.0, False), "max_dis_ratio": (0.0, False), "min_camera_disp": (0.0, True),
            "farneback_poly_sigma": (0.0, False), "surf_hessian": (0.0, True), "flow_match_min": (0.0, True),
            "ransac_threshold": (0.0, False), "warp_margin": (0.0, True), "still_camera": (0.0, True),
        }
        for name, (lo, inclusive) in floats.items():
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (v >= lo if inclusive else v > lo)
            if not ok:
                bad(name, f"a finite number {'>=' if inclusive else '>'} {lo}")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                bad(name, "one of " + ", ".join(allowed))
        for name in ("camera_motion", "detect_humans", "dis_per_level"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "True or False")
        if self.resize_width is not None and (
            isinstance(self.resize_width, bool) or not isinstance(self.resize_width, int)
            or (self.resize_width != 0 and self.resize_width < 16)
        ):
            bad("resize_width", f"None (the working width, {WORKING_WIDTH}), 0 (keep the full size) or an integer "
                                ">= 16")
        if self.end is not None and (
            isinstance(self.end, bool) or not isinstance(self.end, int) or self.end <= self.start
        ):
            bad("end", f"None or an integer > start={self.start}")
        if self.boxes is not None and not isinstance(self.boxes, str):
            bad("boxes", "None or a path string")
        if self.humans_cache is not None and not isinstance(self.humans_cache, str):
            bad("humans_cache", "None or a directory path string")
        if self.boxes is not None and self.detect_humans:
            bad("detect_humans", "False when boxes is given (choose one source of human boxes)")

    # ------------------------------------------------------------------ presets and (de)serialisation
    @classmethod
    def fast(cls, **overrides) -> "IDTParams":
        """The fast preset: one flow pass (``warp_flow="subtract"``, no border band: ``warp_margin=0``, which kept
        the MBH profiles closer to LEAR's on tree, carphone and vtest), homography from flow matches only
        (``matcher="flow"``, no keypoint detection), and a cheaper Farnebäck (``poly_n=5``, ``poly_sigma=1.1``, one
        iteration per level).

        Sampling, tracking, pruning and descriptors are as in the reference. DIS flow (``flow="dis"``) is faster
        still, but its features drift far from the default's (MBH mean-profile correlation with LEAR 0.0-0.8 on
        the reference clips against 0.9-1.0 here), so it is not the preset. The drift of this preset from the
        default is measured by ``bench/bench_idt.py`` and reported in ``bench/RESULTS.md``.
        """
        base = dict(matcher="flow", warp_flow="subtract", warp_margin=0.0, farneback_poly_n=5,
                    farneback_poly_sigma=1.1, farneback_iterations=1)
        base.update(overrides)
        return cls(**base)

    def replace(self, **changes) -> "IDTParams":
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """All options as a JSON-safe dict (field order); ``device`` only when it is not ``"cpu"`` and ``threads``
        only when it is not 1, so the dicts (cache keys, ``info["params"]``) of default runs stay what they were
        before the options existed."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if d["device"] == "cpu":
            del d["device"]
        if d["threads"] == 1:
            del d["threads"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "IDTParams":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ParameterError`."""
        if not isinstance(d, dict):
            raise ParameterError(f"IDTParams.from_dict: expected a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ParameterError(
                f"IDTParams: unknown option(s) {', '.join(unknown)}; known options are {', '.join(sorted(known))}"
            )
        return cls(**d)

    @property
    def working_width(self) -> int | None:
        """Frames wider than this are shrunk to it (``resize_width``, :data:`WORKING_WIDTH` when None); None: keep
        the full size (``resize_width=0``)."""
        if self.resize_width is None:
            return WORKING_WIDTH
        return self.resize_width or None

    # ------------------------------------------------------------------ the components' options
    def camera(self):
        """The camera-motion options (:class:`idtfv.idt.camera.CameraParams`): the fields of the same names."""
        from idtfv.idt.camera import CameraParams

        return CameraParams(**{f.name: getattr(self, f.name) for f in fields(CameraParams)})

    def pyramid_flow(self):
        """The per-level flow options (:class:`idtfv.idt.flow.PyramidFlowParams`): ``flow`` as ``method`` and the
        fields of the same names."""
        from idtfv.idt.flow import PyramidFlowParams

        names = [f.name for f in fields(PyramidFlowParams) if f.name != "method"]
        return PyramidFlowParams(method=self.flow, **{name: getattr(self, name) for name in names})


_DEFAULTS = {f.name: f.default for f in fields(IDTParams)}
_CHOICES = choices_of(IDTParams)  # {"flow": FLOW_METHODS, "matcher": MATCHERS, ...}, from the fields' option()

#: The extractor's presets: ``--preset NAME`` builds ``PRESETS[NAME](**options)``.
PRESETS = {"default": IDTParams, "fast": IDTParams.fast}
