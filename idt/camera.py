r"""Camera-motion estimation between consecutive frames (the "improved" part of iDT).

Wang & Schmid (ICCV 2013), Sec. 2: the camera motion between frames :math:`t-1` and :math:`t` is a homography
:math:`H` (mapping points of frame :math:`t-1` to frame :math:`t`) fitted by RANSAC to two kinds of matches:

* keypoint matches (SURF in the reference; ORB/AKAZE/SIFT here when SURF is absent), a keypoint of frame
  :math:`t` matching only keypoints of :math:`t-1` within a ``match_window`` x ``match_window`` window;
* flow matches: up to 1000 ``goodFeaturesToTrack`` points :math:`p` of frame :math:`t-1` (quality 0.001,
  minimum distance 3) paired with :math:`p + f(p)`, kept when :math:`\lVert f(p)\rVert` > ``flow_match_min``.

Points inside human boxes are excluded. :math:`H` is accepted only with more than ``min_inliers`` RANSAC inliers
(reprojection threshold 1 px), otherwise :math:`H = I`. The camera-compensated frame is
:math:`I_t^w(x) = I_t(Hx)`, i.e. frame :math:`t` warped by :math:`H^{-1}` (:func:`warp_to_previous`), so the flow
from :math:`I_{t-1}` to :math:`I_t^w` is (ideally) zero on the static background.

:func:`compensate_flow` derives that flow from the original one without a second solve:
:math:`f_w(x) = H^{-1}(x + f(x)) - x`, with :math:`H` expressed at each pyramid scale by :func:`scale_homography`.

A **still pair** skips what a still camera does not need: when the flow matches alone give an accepted
homography that moves no frame corner by more than ``still_camera`` px (0.25 by default), that fit is the pair's
homography, no keypoints are detected or matched, and the compensated flow is derived from the flow
(``compensate_flow``, no border band) instead of solved again (:meth:`CameraMotion.step`,
``compensated_flows(..., still=True)``). On the reference clips this kept every fidelity figure within 0.002 of
the reference's steps on every pair (static-camera KTH and vtest: nearly every pair still; the moving-camera
carphone: none), and halved the CPU of vtest's frames 0-200 (``bench/bench_idt.py``: the default against
``every-pair``, ``still_camera=0``).

As the reference: a homography is fitted only with more than 50 matches (``min_matches``); a flow match pairs
:math:`p` with its *rounded* position plus the flow read there; and the warped frame takes frame :math:`t-1`'s
pixel wherever :math:`Hx` is not more than 5 px inside frame :math:`t` (``warp_to_previous(..., prev=...)``;
``compensate_flow(..., interior=...)`` is the same rule for the derived flow), so the compensated flow is zero
in that band instead of following the black border.

:func:`compensated_flows` gives the extractor's camera-compensated flow on every pyramid level, solved again on the
warped frame or derived from the flow (``warp_flow``). The options are a :class:`CameraParams`
(:meth:`idtfv.idt.IDTParams.camera` builds them from the extractor's).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import cv2

from idtfv.errors import ParameterError
from idtfv.idt import _matching_nb as _match_nb
from idtfv.idt import _tracking_nb as _track_nb
from idtfv.idt.params import MATCHERS, MAX_ORB_FEATURES, WARP_FLOW_MODES
from idtfv.idt.sampling import corner_response

__all__ = [
    "CameraParams",
    "compensated_flows",
    "estimate_homography",
    "good_features",
    "warp_to_previous",
    "compensate_flow",
    "scale_homography",
    "scale_homographies",
    "resolve_matcher",
    "CameraMotion",
    "CameraStep",
    "corner_shift",
    "FrameFeatures",
    "camera_compensated_frame",
    "warped_flow",
]


@dataclass(frozen=True, kw_only=True)
class CameraParams:
    """Options of the camera-motion estimate and compensation (frozen, validated; keyword-only).

    The fields are :class:`idtfv.idt.IDTParams`'s of the same names, with the same defaults (the reference's); see
    there for their meaning. :meth:`idtfv.idt.IDTParams.camera` builds this from the extractor's options.

    Parameters
    ----------
    matcher : {"auto", "surf", "orb", "akaze", "sift", "flow"}
        Keypoints of the homography (:func:`resolve_matcher`); ``"flow"``: flow matches only.
    surf_hessian : float
        SURF Hessian threshold (>= 0).
    orb_features : int
        Maximum ORB keypoints per frame (1 .. :data:`idtfv.idt.params.MAX_ORB_FEATURES`).
    match_window : int
        Keypoints match only within this many pixels (>= 1).
    flow_matches : int
        Up to this many ``goodFeaturesToTrack`` points matched through the flow (>= 0).
    flow_match_min : float
        A flow match is used only if its flow exceeds this (px, >= 0).
    ransac_threshold : float
        RANSAC reprojection threshold (px, > 0).
    min_inliers : int
        Accept the homography only with more inliers than this (>= 3).
    min_matches : int
        Fit a homography only with more matches than this (>= 0).
    warp_flow : {"recompute", "subtract"}
        How :func:`compensated_flows` gets the compensated flow: solved again on the warped frame, or derived.
    warp_margin : float
        The reference's border band (px, >= 0) where the warped frame takes frame t-1's pixel.
    still_camera : float
        A frame pair whose flow-only homography moves no frame corner by more than this (px, >= 0) is a still
        pair (:meth:`CameraMotion.step`): no keypoints, and its compensated flow is derived from the flow without
        the border band. 0: every pair as the reference.
    seed : int
        Seeds RANSAC (>= 0) when no generator is given.
    """

    matcher: str = "auto"
    surf_hessian: float = 200.0
    orb_features: int = 1000
    match_window: int = 25
    flow_matches: int = 1000
    flow_match_min: float = 0.0
    ransac_threshold: float = 1.0
    min_inliers: int = 25
    min_matches: int = 50
    warp_flow: str = "recompute"
    warp_margin: float = 5.0
    still_camera: float = 0.25
    seed: int = 0

    def __post_init__(self):
        def bad(name, expected):
            raise ParameterError(f"CameraParams.{name}: expected {expected}, got {getattr(self, name)!r}; "
                                 f"fix the option or use the default ({_CAMERA_DEFAULTS[name]!r})")

        for name, allowed in (("matcher", MATCHERS), ("warp_flow", WARP_FLOW_MODES)):
            if getattr(self, name) not in allowed:
                bad(name, "one of " + ", ".join(allowed))
        for name, lo in (("orb_features", 1), ("match_window", 1), ("flow_matches", 0), ("min_inliers", 3),
                         ("min_matches", 0), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                bad(name, f"an integer >= {lo}")
        if self.orb_features > MAX_ORB_FEATURES:  # ORB reserves room for them up front
            bad("orb_features", f"an integer in 1..{MAX_ORB_FEATURES}")
        for name, lo, inclusive in (("surf_hessian", 0.0, True), ("flow_match_min", 0.0, True),
                                    ("ransac_threshold", 0.0, False), ("warp_margin", 0.0, True),
                                    ("still_camera", 0.0, True)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)
            if not (ok and (v >= lo if inclusive else v > lo)):
                bad(name, f"a finite number {'>=' if inclusive else '>'} {lo}")

    def replace(self, **changes) -> "CameraParams":
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)


_CAMERA_DEFAULTS = {f.name: f.default for f in fields(CameraParams)}


def _camera_params(params, where: str) -> CameraParams:
    if params is None:
        return CameraParams()
    if not isinstance(params, CameraParams):
        raise ParameterError(f"{where}: params must be a CameraParams, got {type(params).__name__}; "
                             "use IDTParams.camera() for the extractor's options")
    return params


def _surf_available() -> bool:
    try:
        cv2.xfeatures2d.SURF_create(200)
        return True
    except Exception:  # nonfree not built: cv2.error
        return False


_SURF_OK: bool | None = None


def resolve_matcher(matcher: str) -> str:
    """The keypoint type actually used for ``matcher`` (``"auto"`` -> ``"surf"`` if available, else ``"akaze"``).

    AKAZE is the fallback because, at about ORB's cost, its homographies brought the trajectory-shape mean profile
    on the moving-camera clip (carphone) to 0.85 correlation with LEAR's (SURF) output, against 0.60 with ORB.
    """
    global _SURF_OK
    if matcher in ("auto", "surf"):
        if _SURF_OK is None:
            _SURF_OK = _surf_available()
        if _SURF_OK:
            return "surf"
        if matcher == "surf":
            raise ParameterError(
                "matcher='surf': SURF is not in this OpenCV build (nonfree modules absent); "
                "use matcher='auto', 'orb', 'akaze' or 'sift'"
            )
        _require_akaze(matcher)
        return "akaze"
    if matcher not in ("orb", "akaze", "sift", "flow"):
        raise ParameterError(f"matcher: expected auto, surf, orb, akaze, sift or flow, got {matcher!r}")
    if matcher == "akaze":
        _require_akaze(matcher)
    return matcher


def _akaze_create():
    """OpenCV's AKAZE constructor: ``cv2.AKAZE_create`` (OpenCV 4) or ``cv2.xfeatures2d.AKAZE_create`` (OpenCV 5,
    which keeps it in the contrib modules); None when this OpenCV has neither."""
    create = getattr(cv2, "AKAZE_create", None)
    return create if create is not None else getattr(getattr(cv2, "xfeatures2d", None), "AKAZE_create", None)


def _require_akaze(matcher: str) -> None:
    """Refuse ``matcher`` (``"akaze"``, or ``"auto"`` without SURF) in one line when this OpenCV has no AKAZE.

    That happens when a plain OpenCV 5 package (``opencv-python-headless``, often pulled in by another library)
    shadows ``opencv-contrib-python-headless``: both install the module ``cv2``, and the last one installed wins.
    """
    if _akaze_create() is not None:
        return
    which = " (the default: AKAZE when SURF is absent)" if matcher == "auto" else ""
    raise ParameterError(
        f"matcher={matcher!r}{which} needs OpenCV's AKAZE keypoints, but this OpenCV ({cv2.__version__}, "
        f"{getattr(cv2, '__file__', '?')}) has none: OpenCV 5 keeps AKAZE in its contrib modules. Reinstall them "
        "with `pip uninstall -y opencv-python-headless opencv-python && pip install --force-reinstall "
        "opencv-contrib-python-headless` (the packages share the module cv2), or choose matcher='orb' or 'sift' "
        "(other homographies)"
    )


def _make_detector(name: str, params):
    if name == "surf":
        return cv2.xfeatures2d.SURF_create(float(params.surf_hessian)), cv2.NORM_L2
    if name == "orb":
        return cv2.ORB_create(nfeatures=int(params.orb_features)), cv2.NORM_HAMMING
    if name == "akaze":
        create = _akaze_create()  # resolve_matcher refused a build without it
        # OpenCV's defaults (4 octaves x 4 layers): 3 x 2 is about 3x faster at 320x240 but its homographies
        # lowered the trajectory-shape fidelity on carphone from 0.85 to 0.52
        return create(), cv2.NORM_HAMMING
    if name == "sift":
        return cv2.SIFT_create(), cv2.NORM_L2
    return None, None


class FrameFeatures:
    """Keypoint positions ``pts (n,2) float32`` and descriptors ``desc (n,d)`` of one frame, and its corner response
    ``response (h, w) float32`` (:func:`idtfv.idt.sampling.corner_response`) when it was made with them (ahead, on a
    host thread: the extractor's ``_HostAhead``), else None (the flow matches then compute it)."""

    __slots__ = ("pts", "desc", "response")

    def __init__(self, pts: np.ndarray, desc: np.ndarray | None, response: np.ndarray | None = None):
        self.pts = pts
        self.desc = desc
        self.response = response


def _detect(detector, gray: np.ndarray, mask: np.ndarray | None) -> FrameFeatures:
    """The keypoints and descriptors of ``gray`` (none without a detector: ``matcher="flow"``)."""
    if detector is None:
        return FrameFeatures(np.zeros((0, 2), np.float32), None)
    kps, desc = detector.detectAndCompute(gray, mask)
    if desc is None or len(kps) == 0:
        return FrameFeatures(np.zeros((0, 2), np.float32), None)
    pts = cv2.KeyPoint_convert(kps).reshape(-1, 2).astype(np.float32, copy=False)
    return FrameFeatures(pts, desc)


def _as_words(desc: np.ndarray) -> np.ndarray:
    """Binary descriptors ``(n, bytes)`` uint8 as ``(n, ceil(bytes / 8))`` uint64 words (zero-padded)."""
    n, b = desc.shape
    words = np.zeros((n, -(-b // 8) * 8), np.uint8)
    words[:, :b] = desc
    return words.view(np.uint64)


def _keypoint_matches(prev: FrameFeatures, cur: FrameFeatures, norm: int, window: int):
    """Nearest-descriptor matches of ``cur`` into ``prev`` restricted to a window (LEAR's windowed matching).

    A keypoint of ``cur`` may match a keypoint of ``prev`` only if ``|dx| <= window`` and ``|dy| <= window``
    (OpenCV 2's ``windowedMatchingMask``); among those it takes the nearest descriptor (Hamming for binary
    descriptors, squared L2 otherwise; ties to the lowest index, as ``cv2.BFMatcher``); see
    :mod:`idtfv.idt._matching_nb`.

    Returns ``(prev_pts (m,2), cur_pts (m,2))`` float32.
    """
    empty = np.zeros((0, 2), np.float32)
    if prev.desc is None or cur.desc is None or len(prev.pts) == 0 or len(cur.pts) == 0:
        return empty, empty
    out = np.empty(len(cur.pts), np.int64)
    qp, tp = np.ascontiguousarray(cur.pts, np.float32), np.ascontiguousarray(prev.pts, np.float32)
    if norm == cv2.NORM_HAMMING:
        _match_nb.nearest_hamming(qp, tp, _as_words(cur.desc), _as_words(prev.desc), float(window), out)
    else:
        _match_nb.nearest_l2(qp, tp, np.ascontiguousarray(cur.desc, np.float32),
                             np.ascontiguousarray(prev.desc, np.float32), float(window), out)
    ok = out >= 0
    return prev.pts[out[ok]], cur.pts[ok]


def good_features(gray: np.ndarray, max_corners: int, quality: float, min_distance: float, *,
                  mask: np.ndarray | None = None, response: np.ndarray | None = None) -> np.ndarray:
    """``cv2.goodFeaturesToTrack(gray, max_corners, quality, min_distance, mask=mask)`` (min-eigenvalue corners):
    the same points in the same order, from the response the dense sampling already computed for this frame
    (:func:`idtfv.idt.sampling.corner_response`) instead of a second one (see :mod:`idtfv.idt._matching_nb`).

    Parameters
    ----------
    gray : (h, w) uint8
    max_corners : int
        At most this many corners (>= 1).
    quality : float
        Corners respond more than ``quality`` times the strongest response (inside the mask).
    min_distance : float
        Corners are at least this far apart (>= 1 px).
    mask : (h, w) uint8 or None
        Non-zero where corners may lie.
    response : (h, w) float32 or None
        ``gray``'s corner response when it was computed already (made ahead); None computes it (or finds it
        remembered).

    Returns
    -------
    (n, 2) float32
        ``[x, y]``, strongest first.
    """
    eig = corner_response(gray) if response is None else response
    if mask is None:
        maxv, mask, use_mask = float(eig.max()), np.zeros((1, 1), np.uint8), False
    else:
        mask = np.ascontiguousarray(mask, np.uint8)
        inside = eig[mask != 0]
        maxv, use_mask = (float(inside.max()) if inside.size else 0.0), True
    out = np.empty((max_corners, 2), np.float32)
    n = _match_nb.good_features(eig, maxv, mask, use_mask, float(quality), float(min_distance), int(max_corners), out)
    return out[:n]


def _flow_matches(prev_gray: np.ndarray, flow: np.ndarray, mask: np.ndarray | None, params, response=None):
    """``goodFeaturesToTrack`` points of ``prev_gray`` (whose corner response is ``response`` when known) paired
    with their flow-displaced positions."""
    empty = np.zeros((0, 2), np.float32)
    if params.flow_matches <= 0:
        return empty, empty
    pts = good_features(prev_gray, int(params.flow_matches), 0.001, 3.0, mask=mask, response=response)
    if len(pts) == 0:
        return empty, empty
    if isinstance(flow, np.ndarray) and flow.ndim == 3 and flow.dtype == np.float32 and flow.flags.c_contiguous:
        # the same pairs in one kernel call (the NumPy below is its reference and serves other flows)
        src = np.empty_like(pts)
        dst = np.empty_like(pts)
        m = _match_nb.flow_match_points(pts, flow, np.float32(params.flow_match_min) ** 2, src, dst)
        return src[:m], dst[:m]
    h, w = flow.shape[:2]
    xi = np.clip(np.rint(pts[:, 0]).astype(np.int64), 0, w - 1)
    yi = np.clip(np.rint(pts[:, 1]).astype(np.int64), 0, h - 1)
    f = flow[yi, xi].astype(np.float32)
    keep = (f[:, 0] ** 2 + f[:, 1] ** 2) > np.float32(params.flow_match_min) ** 2
    # as the reference: the point of frame t is the *rounded* point of t-1 plus the flow read there
    dst = np.stack([xi, yi], axis=1).astype(np.float32) + f
    return pts[keep], dst[keep]


def _fit(prev_pts: np.ndarray, cur_pts: np.ndarray, params: CameraParams, rng) -> tuple[np.ndarray, int]:
    eye = np.eye(3, dtype=np.float64)
    # the reference fits only with more than 50 matches (``min_matches``) and accepts > 25 inliers
    if len(prev_pts) <= max(params.min_inliers, params.min_matches) or len(prev_pts) < 4:
        return eye, 0
    if rng is not None:
        # OpenCV's RANSAC seeds its own generator; seeding the global one as well keeps any other path reproducible
        cv2.setRNGSeed(int(rng.integers(0, 2**31 - 1)))
    H, inl = cv2.findHomography(prev_pts.astype(np.float32, copy=False), cur_pts.astype(np.float32, copy=False),
                                cv2.RANSAC, float(params.ransac_threshold))
    if H is None or inl is None:
        return eye, 0
    n = int(np.count_nonzero(inl))
    if n <= params.min_inliers or not np.all(np.isfinite(H)) or abs(np.linalg.det(H)) < 1e-8:
        return eye, n
    return H.astype(np.float64), n


def estimate_homography(prev_gray: np.ndarray, gray: np.ndarray, flow: np.ndarray, *, human_mask=None,
                        matcher: str = "auto", params: CameraParams | None = None,
                        rng=None) -> tuple[np.ndarray, int, str]:
    """Camera homography from frame ``prev_gray`` (t-1) to ``gray`` (t).

    Parameters
    ----------
    prev_gray, gray : (h, w) uint8
        Consecutive grey frames.
    flow : (h, w, 2) float32
        Optical flow from ``prev_gray`` to ``gray`` (median-filtered, as used for tracking).
    human_mask : (h, w) uint8 or None
        Non-zero where keypoints may lie (0 inside human boxes); None = everywhere.
    matcher : str
        See :func:`resolve_matcher`; overrides ``params.matcher``.
    params : CameraParams or None
        Thresholds (``ransac_threshold``, ``min_inliers``, ``match_window``, ...); the defaults if None.
    rng : numpy.random.Generator or None
        Seeds OpenCV's RNG before RANSAC.

    Returns
    -------
    H : (3, 3) float64
        Maps points of ``prev_gray`` to ``gray``; the identity when not accepted (<= ``min_inliers`` inliers). For
        a still pair (``params.still_camera``, :meth:`CameraMotion.step`) the flow matches' fit alone.
    n_inliers : int
    matcher_name : str
        The keypoint type used (``"surf"``, ``"orb"``, ...).
    """
    params = _camera_params(params, "estimate_homography")
    cm = CameraMotion(params.replace(matcher=matcher) if matcher != params.matcher else params, rng=rng)
    cm.features(prev_gray, human_mask)
    return cm.estimate(prev_gray, gray, flow, human_mask=human_mask)


class CameraStep(NamedTuple):
    """One frame pair's camera motion (:meth:`CameraMotion.step`).

    Attributes
    ----------
    H : (3, 3) float64
        Maps points of frame t-1 to frame t; the identity when none was accepted.
    inliers : int
        RANSAC inliers of the fit that gave ``H``.
    matcher : str
        The keypoint type of the estimator (``"surf"``, ``"akaze"``, ..., ``"flow"``).
    still : bool
        A still pair: ``H`` is the flow matches' fit, accepted, and moves no frame corner by more than
        ``still_camera`` px; no keypoints were matched, and :func:`compensated_flows` derives the compensated flow
        from the flow (``still=True``).
    """

    H: np.ndarray
    inliers: int
    matcher: str
    still: bool


class _Deferred:
    """A frame whose keypoints are taken only when a pair needs them (not a still pair's): the frame, its mask, the
    corner response when known, and the keypoints once detected, or the error their detection raised when it ran
    ahead (:func:`detected_ahead`; raised when a pair needs them, as detecting them then would)."""

    __slots__ = ("gray", "mask", "response", "features", "error")

    def __init__(self, gray: np.ndarray, mask: np.ndarray | None):
        self.gray, self.mask, self.response, self.features, self.error = gray, mask, None, None, None


def detected_ahead(detector, gray: np.ndarray, mask: np.ndarray | None) -> _Deferred:
    """A frame's keypoints detected ahead (on another thread, with ``detector``, a twin of the camera's), for
    :meth:`CameraMotion.features` to take: a failed detection is kept and raised only if a pair needs them."""
    frame = _Deferred(gray, mask)
    try:
        frame.features = _detect(detector, gray, mask)
    except Exception as e:  # raised by CameraMotion.step when a pair needs this frame's keypoints
        frame.error = e
    return frame


def corner_shift(H: np.ndarray, w: int, h: int) -> float:
    """The largest distance (px) by which ``H`` moves one of the four corners of a ``w`` x ``h`` frame."""
    H = np.asarray(H, np.float64)
    shift = 0.0
    for x, y in ((0.0, 0.0), (w - 1.0, 0.0), (0.0, h - 1.0), (w - 1.0, h - 1.0)):
        d = H[2, 0] * x + H[2, 1] * y + H[2, 2]
        if not d > 0:  # the corner maps through infinity: not a small motion
            return math.inf
        shift = max(shift, math.hypot((H[0, 0] * x + H[0, 1] * y + H[0, 2]) / d - x,
                                      (H[1, 0] * x + H[1, 1] * y + H[1, 2]) / d - y))
    return shift


class CameraMotion:
    """Stateful estimator for a video: reuses the previous frame's keypoints (as the reference does).

    Call :meth:`features` on the first frame, then :meth:`step` (or :meth:`estimate`) for each following frame.
    A frame's keypoints are detected when a pair first needs them: a still pair (``params.still_camera``, see
    :meth:`step`) needs none, so a still camera's frames are never detected.

    Parameters
    ----------
    params : CameraParams
    rng : numpy.random.Generator or None
        RANSAC's generator (default: seeded with ``params.seed``).
    """

    def __init__(self, params: CameraParams, *, rng=None):
        params = _camera_params(params, "CameraMotion")
        self.params = params
        self.matcher_name = resolve_matcher(params.matcher)
        self.detector, self.norm = _make_detector(self.matcher_name, params)
        self.rng = rng if rng is not None else np.random.default_rng(params.seed)
        self._prev: FrameFeatures | _Deferred | None = None

    def features(self, gray: np.ndarray, human_mask=None) -> None:
        """Remember ``gray`` (and its mask) as the previous frame of the next :meth:`step`; its keypoints are
        detected when a pair needs them."""
        self._prev = _Deferred(gray, human_mask)

    def _keypoints(self, frame: "FrameFeatures | _Deferred") -> FrameFeatures:
        """``frame``'s keypoints, detected now if they were deferred (once per frame)."""
        if not isinstance(frame, _Deferred):
            return frame
        if frame.error is not None:
            raise frame.error
        if frame.features is None:
            frame.features = _detect(self.detector, frame.gray, frame.mask)
        return frame.features

    def step(self, prev_gray, gray, flow, *, human_mask=None) -> CameraStep:
        """The camera motion from ``prev_gray`` to ``gray`` (see :func:`estimate_homography`); remembers ``gray``
        as the next pair's previous frame.

        With ``still_camera > 0`` and a detector, the flow matches are fitted first: when that fit is accepted
        and moves no frame corner by more than ``still_camera`` px, it is the pair's homography and the pair is
        still (no keypoints detected or matched). Otherwise the keypoint matches join the flow matches and the
        fit is made again, as the reference does (its RANSAC draws the generator's next seed). Without a
        detector (``matcher="flow"``) the one fit serves both.
        """
        prev = self._prev
        if prev is None:
            self.features(prev_gray, human_mask)
            prev = self._prev
        self.features(gray, human_mask)
        cur = self._prev
        p = self.params
        fl_prev, fl_cur = _flow_matches(prev_gray, flow, human_mask, p, prev.response)
        h, w = prev_gray.shape[:2]
        if p.still_camera > 0 or self.detector is None:
            H, n = _fit(fl_prev, fl_cur, p, self.rng)
            still = p.still_camera > 0 and n > p.min_inliers and corner_shift(H, w, h) <= p.still_camera
            if still or self.detector is None:
                return CameraStep(H, n, self.matcher_name, still)
        kp_prev, kp_cur = _keypoint_matches(self._keypoints(prev), self._keypoints(cur), self.norm, p.match_window)
        prev_pts = np.concatenate([fl_prev, kp_prev]) if len(kp_prev) else fl_prev
        cur_pts = np.concatenate([fl_cur, kp_cur]) if len(kp_cur) else fl_cur
        H, n = _fit(prev_pts, cur_pts, p, self.rng)
        return CameraStep(H, n, self.matcher_name, False)

    def estimate(self, prev_gray, gray, flow, *, human_mask=None) -> tuple[np.ndarray, int, str]:
        """``(H, inliers, matcher)`` of :meth:`step`."""
        H, n, name, _ = self.step(prev_gray, gray, flow, human_mask=human_mask)
        return H, n, name


def _interior(H: np.ndarray, w: int, h: int, margin: float) -> np.ndarray:
    """(h, w) bool: where :math:`H x` lies strictly inside ``(margin, w-1-margin) x (margin, h-1-margin)``."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    H = np.asarray(H, np.float64)
    d = H[2, 0] * xs + H[2, 1] * ys + H[2, 2]
    sx = (H[0, 0] * xs + H[0, 1] * ys + H[0, 2]) / d
    sy = (H[1, 0] * xs + H[1, 1] * ys + H[1, 2]) / d
    return (sx > margin) & (sx < w - 1 - margin) & (sy > margin) & (sy < h - 1 - margin)


def warp_to_previous(gray: np.ndarray, H: np.ndarray, *, prev: np.ndarray | None = None,
                     margin: float = 5.0) -> np.ndarray:
    """Frame ``t`` warped into frame ``t-1``'s camera: ``out(x) = gray(H x)`` (``warpPerspective`` by H^-1).

    Parameters
    ----------
    gray : (h, w) array (uint8 or float32)
    H : (3, 3) float64, maps frame t-1 to frame t.
    prev : (h, w) array or None
        Frame t-1. When given, pixels whose source :math:`H x` is not at least ``margin`` px inside frame t are
        copied from ``prev`` (the reference does this, so the compensated flow is zero there instead of
        following the black border); when None, they are 0.
    margin : float
        Width of that border band in pixels (the reference: 5).
    """
    h, w = gray.shape[:2]
    # WARP_INVERSE_MAP: dst(x) = src(M x) with M = H, identical to warping by H^-1
    out = cv2.warpPerspective(gray, np.asarray(H, np.float64), (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    if prev is not None:
        if prev.shape != gray.shape:
            raise ParameterError(f"warp_to_previous: prev has shape {prev.shape}, expected {gray.shape} like gray")
        from idtfv.idt import _warp_nb  # loaded on first use (the border rule of _interior, fused, 15x faster)

        _warp_nb.fill_border(out, np.ascontiguousarray(prev, out.dtype), np.ascontiguousarray(H, np.float64),
                             float(margin))
    return out


_EYE3 = np.eye(3).tolist()


def is_identity(H) -> bool:
    """Whether ``H`` is the 3x3 identity, exactly (``np.array_equal(H, np.eye(3))``, without its calls)."""
    H = np.asarray(H)
    return H.shape == (3, 3) and H.tolist() == _EYE3


@functools.lru_cache(maxsize=64)
def _scale_matrices(scale: float) -> tuple[np.ndarray, np.ndarray]:
    """:math:`S^{-1}` and :math:`S` of :func:`scale_homography` (read-only; made once per scale)."""
    S = np.diag([scale, scale, 1.0])
    Si = np.diag([1.0 / scale, 1.0 / scale, 1.0])
    S.flags.writeable = Si.flags.writeable = False
    return Si, S


def scale_homography(H: np.ndarray, scale: float) -> np.ndarray:
    """H in the coordinates of a pyramid level whose pixel ``x_s`` is ``scale * x_s`` in the original frame.

    :math:`H_s = S^{-1} H S` with :math:`S = \\mathrm{diag}(s, s, 1)`.
    """
    Si, S = _scale_matrices(float(scale))
    return Si @ np.asarray(H, np.float64) @ S


def scale_homographies(H: np.ndarray, factors) -> np.ndarray:
    """:func:`scale_homography` of ``H`` for every scale of ``factors`` at once, bit for bit.

    Parameters
    ----------
    H : (3, 3) float64
        Homography in the original frame's pixels.
    factors : sequence of float, length n
        Each level's scale :math:`s`.

    Returns
    -------
    (n, 3, 3) float64
        :math:`H_s = S^{-1} H S`, computed as its entries :math:`(d^{-1}_i H_{ij}) d_j` with :math:`d = (s, s, 1)`:
        the products the matrix products make (their sums' other terms are exact zeros), so the bits are those of
        :func:`scale_homography` (the tests compare them on random matrices).
    """
    rows, cols = _scale_vectors(tuple(float(s) for s in factors))
    return rows * np.asarray(H, np.float64)[None] * cols


@functools.lru_cache(maxsize=16)
def _scale_vectors(factors: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """:math:`d^{-1}` as ``(n, 3, 1)`` and :math:`d` as ``(n, 1, 3)`` of :func:`scale_homographies` (read-only; made
    once per pyramid)."""
    s = np.asarray(factors, np.float64)
    one = np.ones_like(s)
    rows = np.stack([1.0 / s, 1.0 / s, one], axis=1)[:, :, None]
    cols = np.stack([s, s, one], axis=1)[:, None, :]
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


def compensate_flow(flow: np.ndarray, H: np.ndarray, *, interior: tuple[float, float, float] | None = None,
                    inverse: np.ndarray | None = None) -> np.ndarray:
    r"""Camera-compensated flow :math:`f_w(x) = H^{-1}(x + f(x)) - x` derived from the flow ``f`` (one solve).

    Parameters
    ----------
    flow : (h, w, 2) float32
        Flow from frame t-1 to t in this level's pixels.
    H : (3, 3) float64
        Homography t-1 -> t in this level's pixels (see :func:`scale_homography`).

    interior : (lo, hi_x, hi_y) or None
        The reference's border rule (see :func:`warp_to_previous` with ``prev``): where :math:`H x` is not inside
        ``(lo, hi_x) x (lo, hi_y)`` (this level's pixels) the compensated flow is set to 0, as it is (about) when
        the reference solves the flow on its border-filled warped frame. None: no border rule.
    inverse : (3, 3) float64 or None
        :math:`H^{-1}` when the caller has it: ``np.linalg.inv(H)``, e.g. of every level's :math:`H_s` in one call,
        which gives each matrix's bits. None: computed here.

    Returns
    -------
    (h, w, 2) float32
    """
    if interior is None:
        if is_identity(H):
            return flow
        Hi = np.linalg.inv(np.asarray(H, np.float64)) if inverse is None else inverse
        flow = np.ascontiguousarray(flow, np.float32)
        out = np.empty_like(flow)
        _track_nb.compensate_flow(flow, Hi, out)
        return out
    H = np.ascontiguousarray(H, np.float64)
    Hi = np.linalg.inv(H) if inverse is None else inverse
    flow = np.ascontiguousarray(flow, np.float32)
    out = np.empty_like(flow)
    lo, hix, hiy = (float(v) for v in interior)
    _track_nb.compensate_flow_interior(flow, Hi, H, lo, hix, hiy, out)
    return out


def compensated_flows(H: np.ndarray, flows: list[np.ndarray], factors: list[float], *, frame: np.ndarray,
                      prev_frame: np.ndarray, params: CameraParams, recompute, refine=None,
                      device: str = "cpu", still: bool = False) -> list[np.ndarray]:
    r"""The camera-compensated flow :math:`f^w_s` from frame t-1 to t on every pyramid level.

    ``params.warp_flow == "recompute"`` (the reference): frame t warped by :math:`H^{-1}`, its border band filled
    from frame t-1 (:func:`warp_to_previous`), and the flow solved again by ``recompute``. ``"subtract"``: derived
    from the flow, :math:`f_w(x) = H^{-1}(x + f(x)) - x` per level (:func:`compensate_flow`), with the same border
    rule in level pixels. ``"refine"``: the warped frame as ``"recompute"``, its flow refined by ``refine`` from
    the ``"subtract"`` flows (one Farnebäck round per level instead of a full solve). With ``warp_margin = 0``
    and :math:`H = I` (no camera motion accepted) the flows are returned as they are.

    Parameters
    ----------
    H : (3, 3) float64
        Homography t-1 -> t in frame pixels (the identity when none was accepted).
    flows : list of (h_s, w_s, 2) float32
        Flow from t-1 to t on each level.
    factors : list of float
        Each level's scale factor :math:`s` (a level pixel ``x`` is ``s * x`` in the frame).
    frame, prev_frame : (h, w) uint8
        Frames t and t-1.
    params : CameraParams
        ``warp_flow`` and ``warp_margin``.
    recompute : callable
        ``recompute(warped_frame) -> flows`` from frame t-1 to the warped frame on every level (used by
        ``"recompute"``; e.g. :meth:`idtfv.idt.flow.PyramidFlow.flow_from_previous` of its pyramid).
    refine : callable or None
        ``refine(warped_frame, priors) -> flows``, the same started from ``priors`` (one (h_s, w_s, 2) flow per
        level; e.g. :meth:`idtfv.idt.flow.PyramidFlow.refine_from_previous`); used by ``"refine"``, which needs it.
    device : {"cpu", "cuda"}
        ``"cuda"``: ``frame``, ``prev_frame`` (uint8) and ``flows`` are device arrays (CuPy), the warp and the
        derived flows are made there (:mod:`idtfv.idt._frame_cuda`) and ``recompute`` / ``refine`` get the warped
        frame on the device; ``H`` stays a host array.
    still : bool
        The pair is still (:attr:`CameraStep.still`): the flows are derived as ``"subtract"`` does, without the
        border band, whatever ``params.warp_flow`` and ``warp_margin`` say (the flows as they are when
        :math:`H = I`).

    Returns
    -------
    list of (h_s, w_s, 2) float32
    """
    if device == "cpu":
        warp, compensate = warp_to_previous, compensate_flow
    elif device == "cuda":
        from idtfv.idt import _frame_cuda  # needs CuPy: loaded only for the device

        warp = _frame_cuda.warp_to_previous

        def compensate(flow, H_s, *, interior=None, inverse=None):  # the device kernel inverts H_s itself
            return _frame_cuda.compensate_flow(flow, H_s, interior=interior)
    else:
        raise ParameterError(f"compensated_flows: device must be 'cpu' or 'cuda', got {device!r}; resolve 'auto' "
                             "with idtfv.idt.device.resolve_device first")
    # a still pair: derived as "subtract" without the band
    mode, margin = ("subtract", 0.0) if still else (params.warp_flow, params.warp_margin)
    if margin <= 0 and is_identity(H):
        return flows
    if mode == "recompute":
        return recompute(warp(frame, H, prev=prev_frame if margin > 0 else None, margin=margin))
    # every level's H_s and its inverse in two NumPy calls instead of a few per level (the main thread's Python
    # between kernels holds the GIL that --threads' front thread waits for); the same bits as level by level
    scaled = scale_homographies(H, factors)
    inverses = np.linalg.inv(scaled) if device == "cpu" else [None] * len(scaled)
    if margin <= 0:
        derived = [compensate(f, H_s, inverse=Hi) for f, H_s, Hi in zip(flows, scaled, inverses)]
    else:
        h, w = frame.shape[:2]
        derived = [compensate(f, H_s, inverse=Hi,
                              interior=(margin / s, (w - 1 - margin) / s, (h - 1 - margin) / s))
                   for f, H_s, Hi, s in zip(flows, scaled, inverses, factors)]
    if mode == "refine":
        if refine is None:
            raise ParameterError("compensated_flows: warp_flow='refine' needs the refine callable "
                                 "(refine(warped_frame, priors) -> flows); pass it or use warp_flow='recompute'")
        return refine(warp(frame, H, prev=prev_frame if margin > 0 else None, margin=margin), derived)
    return derived


def camera_compensated_frame(prev: np.ndarray, cur: np.ndarray, flow: np.ndarray, *, rng) -> np.ndarray:
    """Frame ``cur`` warped into ``prev``'s camera with the extractor's homography: the one definition of "warped
    flow" (TSN), used by ``extract-flow --warped`` and the CNN datasets.

    The homography :math:`H` is estimated from keypoint and flow matches (:func:`estimate_homography`, fed by
    ``flow``, the plain flow from ``prev`` to ``cur``), ``cur`` is warped by :math:`H^{-1}` and the border band
    is taken from ``prev`` (:func:`warp_to_previous`), as the reference does. The flow from ``prev`` to the
    returned frame is the camera-compensated ("warped") flow.

    Parameters
    ----------
    prev, cur : (h, w) uint8
        Consecutive grey frames.
    flow : (h, w, 2) float32
        Flow from ``prev`` to ``cur``.
    rng : numpy.random.Generator
        RANSAC's generator.

    Returns
    -------
    (h, w) uint8
    """
    H, _n_inliers, _matcher = estimate_homography(prev, cur, flow, rng=rng)
    return warp_to_previous(cur, H, prev=prev)


def warped_flow(prev: np.ndarray, cur: np.ndarray, solve, *, rng, flow: np.ndarray | None = None) -> np.ndarray:
    """Camera-compensated flow from ``prev`` to ``cur``: ``solve(prev, camera_compensated_frame(...))``.

    ``solve(prev, cur) -> (h, w, 2)`` is the flow solver (also used for the first, plain flow unless ``flow`` is
    given). See :func:`camera_compensated_frame`.
    """
    if flow is None:
        flow = solve(prev, cur)
    return solve(prev, camera_compensated_frame(prev, cur, flow, rng=rng))
