"""The extractor package's stages: improved dense trajectories (``idtfv features``) and optical-flow rawframes
for the CNNs (``idtfv flow``, ``extract-flow``), of every video of a manifest.

Features: :func:`run_features` runs the per-video functions through :func:`idtfv.runner.run_stage`. Those functions have the
runner's signature ``func(entry, params) -> dict[str, np.ndarray]``, are module-level (shipped to worker
processes) and import the extractor inside the call, so that importing this module (in the CLI or in a Dask
worker) is cheap.

Flow: for a video of T decoded frames :func:`extract_video` writes ``DIR/<video_id>/img_00001.jpg .. img_{T}.jpg``
and T-1 flow pairs ``flow_x/flow_y_00001.jpg ..`` (flow k: frame k -> k+1), or with ``fmt="npz"`` the single
``DIR/<video_id>.npz`` (:mod:`idtfv.idt.rawframes`). ``warped=True`` writes TSN's camera-compensated "warped
flow" (:func:`idtfv.idt.camera.camera_compensated_frame`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from pathlib import Path

import numpy as np

from idtfv.atomic import make_directory
from idtfv.errors import FormatError, ParameterError, VideoError
from idtfv.idt.rawframes import DEFAULT_BOUND, DEFAULT_QUALITY

__all__ = ["features_params", "run_features", "features_item", "features_sample_item", "warmup_features",
           "empty_reason",
           "FLOW_PRESETS", "extract_video", "flow_params", "flow_item", "run_flow"]


def features_item(entry, params: Mapping, *, out=None) -> dict[str, np.ndarray] | None:
    """Extract improved dense trajectories of one video.

    The features stage's function: the runner calls it with ``out`` (``features_item.writes_npz``), and the
    trajectories go to that file frame after frame as they finish (:func:`idtfv.idt.extract_to_file`, float32
    blocks: the arrays of ``Trajectories.as_arrays()``, bit for bit), so a worker's memory does not grow with the
    video's length. Without ``out`` they are returned.

    Parameters
    ----------
    entry : idtfv.data.manifest.VideoEntry
        The video; ``entry.path`` is its absolute path.
    params : mapping
        ``{"idt": IDTParams.to_dict()}``.
    out : path-like or None
        Write the result there (atomically) and return None.

    Returns
    -------
    dict of str to ndarray or None
        ``Trajectories.as_arrays()``: ``meta (n,10)``, ``traj (n,30)``, ``hog (n,96)``, ``hof (n,108)``,
        ``mbhx (n,96)``, ``mbhy (n,96)`` float32 and ``info_json`` (0-d unicode); None with ``out``.

    Raises
    ------
    idtfv.runner.EmptyResult
        No trajectory (``n == 0``): the reason (:func:`empty_reason`) and the empty arrays; the runner records
        the video as ``empty`` and later stages leave it out.
    """
    from idtfv.idt.params import IDTParams

    idt_params = IDTParams.from_dict(dict(params["idt"]))
    if out is None:
        from idtfv.idt.extractor import extract

        arrays = extract(entry.path, params=idt_params).as_arrays()
        _refuse_empty(arrays, idt_params)
        return arrays
    from idtfv.idt.extractor import extract_to_file

    if extract_to_file(entry.path, out, idt_params, format="npz", compact=False).n_rows == 0:
        _refuse_empty_file(out, idt_params)
    return None


features_item.writes_npz = True  # the runner passes ``out`` (see :mod:`idtfv.runner`)


def empty_reason(n_frames, params) -> str:
    """Why a video of ``n_frames`` frames gave no trajectory with ``params`` (an ``IDTParams``), in one line.

    ``"3 frames; at least L+1=16 needed (L is --track-length)"`` when the video is shorter than one trajectory, else
    ``"no trajectory survived pruning (N frames)"`` (static, textureless or camera-only motion).
    """
    need = int(params.track_length) + 1
    if n_frames is not None and int(n_frames) < need:
        return (f"{int(n_frames)} frame{'s' if int(n_frames) != 1 else ''}; at least L+1={need} needed "
                "(L is --track-length)")
    frames = "" if n_frames is None else f" ({int(n_frames)} frames)"
    return f"no trajectory survived pruning{frames}"


def _frames_of(arrays) -> int | None:
    import json

    try:
        return int(json.loads(str(arrays["info_json"]))["frames"])
    except (KeyError, ValueError, TypeError):
        return None


def _refuse_empty(arrays, idt_params) -> None:
    """Raise :class:`idtfv.runner.EmptyResult` (the arrays kept) when a video gave no trajectory."""
    if arrays["meta"].shape[0] == 0:
        from idtfv.runner import EmptyResult

        raise EmptyResult(empty_reason(_frames_of(arrays), idt_params), arrays)


def _refuse_empty_file(path, idt_params) -> None:
    """:func:`_refuse_empty` for a trajectories file just written without a row (its arrays: a few bytes)."""
    from idtfv.cache import load_valid

    arrays = load_valid(path)
    if arrays is None:
        raise FormatError(path, "the trajectories file just written does not load; rerun the stage")
    _refuse_empty(arrays, idt_params)


def features_sample_item(entry, params: Mapping, *, out=None) -> dict[str, np.ndarray]:
    """Extract one video's trajectories and keep only a seeded sample of them (``idtfv features --store sample``).

    The streaming mode's features stage: the full descriptors exist only in this call; what is returned (and
    stored) is the sample that PCA and the codebook are fitted from (``idtfv.sampling.keep_sample``'s rows,
    drawn by ``video_rng(sample_seed, video_id)``), so each stored file is bounded by ``sample_per_video`` rows.
    With ``out`` (the runner's, ``features_sample_item.writes_npz``) the trajectories go to a scratch file beside
    it as they finish and the sampled rows are read back from it (:func:`idtfv.cache.take_rows`), so memory does
    not grow with the video's length either; the same arrays.

    Parameters
    ----------
    entry : idtfv.data.manifest.VideoEntry
        The video; ``entry.path`` is its absolute path.
    params : mapping
        ``{"idt": IDTParams.to_dict(), "store": "sample", "sample_per_video": N, "sample_seed": s}``.
    out : path-like or None
        Where the runner will save the result (its directory holds the scratch file).

    Returns
    -------
    dict of str to ndarray
        ``sample_meta (m,10)``, ``sample_traj (m,30)``, ``sample_hog (m,96)``, ``sample_hof (m,108)``,
        ``sample_mbhx (m,96)``, ``sample_mbhy (m,96)`` float32 (the same ``m = min(N, n)`` rows of every array),
        ``n_rows`` () int64 (``n``, the video's trajectory count) and ``info_json`` (0-d unicode).
    """
    from idtfv.idt.params import IDTParams
    from idtfv.sampling import SAMPLE_PREFIX, keep_sample, sample_rows, video_rng

    idt_params = IDTParams.from_dict(dict(params["idt"]))
    n_keep, seed = int(params["sample_per_video"]), int(params["sample_seed"])
    if out is None:
        from idtfv.idt.extractor import extract

        arrays = extract(entry.path, params=idt_params).as_arrays()
        _refuse_empty(arrays, idt_params)
        sample = keep_sample(arrays, n_keep=n_keep, seed=seed, video_id=entry.video_id)
        sample["n_rows"] = np.array(arrays["meta"].shape[0], np.int64)
        if "info_json" in arrays:
            sample["info_json"] = arrays["info_json"]
        return sample
    from idtfv.atomic import temp_name, writer_tag
    from idtfv.cache import take_rows
    from idtfv.idt.extractor import extract_to_file

    out = Path(out)
    scratch = out.parent / temp_name(out.name + ".all", writer_tag())  # a killed run's is removed as stale
    try:
        n = int(extract_to_file(entry.path, scratch, idt_params, format="npz", compact=False).n_rows)
        if n == 0:
            _refuse_empty_file(scratch, idt_params)
        rows = sample_rows(n, n_keep, rng=video_rng(seed, entry.video_id))  # keep_sample's rows
        with np.load(scratch, allow_pickle=False) as z:
            names = [name for name in z.files if name != "info_json"]
            info = z["info_json"] if "info_json" in z.files else None
        sample = {SAMPLE_PREFIX + name: take_rows(scratch, name, rows) for name in names}  # meta first
        sample["n_rows"] = np.array(n, np.int64)
        if info is not None:
            sample["info_json"] = info
        return sample
    finally:
        with contextlib.suppress(OSError):
            scratch.unlink(missing_ok=True)


features_sample_item.writes_npz = True  # the runner passes ``out`` (its scratch file's directory)


def warmup_features(params: Mapping) -> None:
    """Compile the extractor's Numba kernels once in this process before worker processes start.

    Serial kernels are compiled with ``cache=True``, so the workers then load them from the on-disk cache instead
    of each compiling them at the same time. Runs :func:`idtfv.idt.extract` on 24 synthetic 96x72 frames of a
    translating texture; any failure is ignored (the real run reports per-video errors).
    """
    try:
        from idtfv.idt.extractor import extract
        from idtfv.idt.params import IDTParams

        idt_params = IDTParams.from_dict(dict(params["idt"]))
        rng = np.random.default_rng(0)
        texture = rng.integers(0, 256, (72, 160)).astype(np.float32)
        texture = (texture + np.roll(texture, 1, 0) + np.roll(texture, 1, 1) + np.roll(texture, 1, (0, 1))) / 4
        frames = [np.ascontiguousarray(texture[:, 2 * t: 2 * t + 96]).astype(np.uint8) for t in range(24)]
        extract(frames, params=idt_params)
    except Exception:  # noqa: BLE001 - a warm-up must never stop the run
        pass


def features_params(*, preset: str = "default", flow: str | None = None, resize_width: int | None = None,
                    seed: int | None = None) -> dict:
    """The features stage parameters ``{"idt": IDTParams.to_dict()}`` for these command-line choices."""
    from idtfv.idt.params import IDTParams

    params = IDTParams() if preset == "default" else IDTParams.fast()
    changes = {key: value for key, value in (("flow", flow), ("resize_width", resize_width), ("seed", seed))
               if value is not None}
    if changes:
        params = params.replace(**changes)
    return {"idt": params.to_dict()}


def run_features(entries, params: Mapping, *, cache_root, jobs: int = 1, scheduler=None, force: bool = False,
                 func=None, gpu=None):
    """Run the features stage over ``entries``; returns the runner's :class:`~idtfv.runner.StageResult`.

    ``params`` is :func:`features_params`' dict, plus ``store="sample"``, ``sample_per_video`` and
    ``sample_seed`` for the streaming mode (:func:`features_sample_item`). ``func`` replaces the per-video
    function (tests).

    When ``params["idt"]["device"]`` resolves to ``"cuda"`` (and no ``scheduler`` is given) the videos run on the
    GPU worker (:mod:`idtfv.idt.gpu_worker`): ``gpu.gpu_streams`` videos at once (a
    :class:`~idtfv.idt.gpu_worker.GpuWorkerOptions`, default 4), each in its own thread and CUDA stream; ``jobs``
    is then not used. Each video runs with ``IDTParams.threads = gpu.threads_per_video()`` unless
    ``params["idt"]`` sets it: N > 1 gives each video thread N - 1 host threads and a decode thread of its own (the
    keypoints run ahead there; every device call stays on the video's thread and stream). N changes no byte, so
    the stage directory is that of the parameters without it. The files are those of a one-at-a-time run.
    """
    from idtfv.idt.trajectories import NPZ_HUFFMAN_BLOCKS
    from idtfv.runner import entry_fingerprint, run_stage
    from idtfv.sampling import SAMPLE_PREFIX

    # the descriptor blocks (and their streaming-mode samples) with Huffman codes only: half the CPU to write
    huffman = NPZ_HUFFMAN_BLOCKS + tuple(SAMPLE_PREFIX + name for name in NPZ_HUFFMAN_BLOCKS)

    if func is None:
        func = features_sample_item if params.get("store") == "sample" else features_item
    from idtfv.idt.gpu_worker import GpuWorkerOptions, uses_gpu_worker, video_stream

    if uses_gpu_worker(dict(params["idt"]), scheduler=scheduler):
        gpu = GpuWorkerOptions() if gpu is None else gpu
        if len(entries) > 1 and func in (features_item, features_sample_item):
            warmup_features(params)  # compile the device kernels (and Numba's) once, before the threads start
        threads = gpu.threads_per_video()
        if threads > 1 and "threads" not in params["idt"]:
            func = _with_threads(func, threads)
        return run_stage("features", func, entries, params=dict(params), cache_root=cache_root, force=force,
                         threads=gpu.gpu_streams, thread_context=video_stream, fingerprint=entry_fingerprint,
                         huffman_only=huffman)
    if jobs != 1 and scheduler is None and len(entries) > 1 and func in (features_item, features_sample_item):
        warmup_features(params)  # compile the kernels once, not once per worker at the same time
    return run_stage("features", func, entries, params=dict(params), cache_root=cache_root, jobs=jobs,
                     scheduler=scheduler, force=force, fingerprint=entry_fingerprint, huffman_only=huffman)


def _with_threads(func, threads: int):
    """``func`` run with ``IDTParams.threads = threads``, which the stage's parameters (its directory's hash) leave
    out: the thread count changes no output byte."""

    def item(entry, params, **kwargs):
        return func(entry, {**params, "idt": {**params["idt"], "threads": threads}}, **kwargs)

    item.__name__ = getattr(func, "__name__", "item")
    item.writes_npz = getattr(func, "writes_npz", False)  # and takes ``out`` as ``func`` does
    return item


# ----------------------------------------------------------------------------------------------- flow
FLOW_PRESETS = ("default", "fast")
#: Frame pairs solved together when TV-L1 runs on a GPU.
GPU_BATCH = 16


def flow_params(*, method: str = "tvl1", preset: str = "default"):
    """The parameter object of ``method`` for a ``--preset`` (``fast``: :meth:`TVL1Params.fast`, DIS "fast")."""
    from idtfv.idt.flow import DISParams, FarnebackParams, TVL1Params

    if preset not in FLOW_PRESETS:
        raise ParameterError(f"preset must be one of {', '.join(FLOW_PRESETS)}, got {preset!r}")
    if method == "tvl1":
        return TVL1Params.fast() if preset == "fast" else TVL1Params()
    if method == "dis":
        return DISParams(preset="fast" if preset == "fast" else "medium")
    if method == "farneback":
        return FarnebackParams()
    raise ParameterError(f"method must be one of tvl1, farneback, dis, got {method!r}")


def _gray(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _flow_fn(method, backend, params, warped, seed):
    """A ``(prev_grays, grays) -> (B, h, w, 2)`` flow function for a chunk of consecutive pairs.

    With ``warped``: TSN's warped flow (:func:`idtfv.idt.camera.camera_compensated_frame`).
    """
    from idtfv.idt.flow import estimate_flow_batch

    def plain(prevs, curs):
        return estimate_flow_batch(prevs, curs, method=method, backend=backend, params=params)

    if not warped:
        return plain
    from idtfv.idt.camera import camera_compensated_frame

    rng = np.random.default_rng(seed)

    def warped_fn(prevs, curs):
        first = plain(prevs, curs)
        compensated = [camera_compensated_frame(prev, cur, flow, rng=rng) for prev, cur, flow in zip(prevs, curs, first)]
        return plain(prevs, compensated)

    return warped_fn


def extract_video(
    video,
    out_dir,
    *,
    video_id: str | None = None,
    method: str = "tvl1",
    preset: str = "default",
    bound: float = DEFAULT_BOUND,
    resize_width: int | None = None,
    warped: bool = False,
    fmt: str = "jpg",
    backend: str = "auto",
    quality: int = DEFAULT_QUALITY,
    seed: int = 0,
    on_frame=None,
) -> dict:
    """Write one video's rawframes (``fmt="jpg"``) or flow ``.npz`` (``fmt="npz"``) under ``out_dir``.

    Returns ``{"n_frames", "n_flows", "height", "width"}`` (int64 0-d arrays, the runner's per-video record).

    ``on_frame(i, n)`` (progress bars), when given, is called after the first frame and after each flow is
    solved, with ``i`` the frames done so far (frame k is done when the flow into it is) and ``n`` the video's
    decodable frame count (:func:`idtfv.video.probe_video`, one extra decode pass made only when ``on_frame`` is
    given). It does not change what is written.

    Raises
    ------
    idtfv.errors.VideoError
        Unreadable video or fewer than 2 frames.
    idtfv.errors.ParameterError
        Bad options.
    """
    from idtfv.data.manifest import MAX_VIDEO_ID_LENGTH, is_valid_video_id, make_video_id
    from idtfv.idt.flow import gpu_available
    from idtfv.idt.rawframes import FlowNpzWriter, RawframesWriter
    from idtfv.video import iter_frames

    if fmt not in ("jpg", "npz"):
        raise ParameterError(f"format must be jpg or npz, got {fmt!r}")
    if resize_width is not None and not (isinstance(resize_width, int) and resize_width > 0):
        raise ParameterError(f"--resize-width must be a positive integer, got {resize_width!r}")
    params = flow_params(method=method, preset=preset)
    video = Path(video)
    out_dir = Path(out_dir)
    if video_id is not None and not is_valid_video_id(video_id):  # "." would be out_dir itself, "../x" outside it
        raise ParameterError(f"--video-id: expected a plain name of [A-Za-z0-9._-] (it names DIR/<video_id>), not "
                             f"'.' or '..', at most {MAX_VIDEO_ID_LENGTH} characters; got {video_id!r}; leave "
                             "--video-id out to use the video's file stem")
    video_id = video_id or make_video_id(video.name)
    flow_fn = _flow_fn(method, backend, params, warped, seed)
    # pairs are solved in chunks: one at a time on the CPU, batches of GPU_BATCH on a GPU
    chunk = GPU_BATCH if (method == "tvl1" and backend != "cpu" and gpu_available()) else 1

    total = None
    if on_frame is not None:
        from idtfv.video import probe_video

        total = probe_video(video).frames
    frames = iter_frames(video, gray=False, max_width=resize_width)
    n_frames = 0
    prev_gray = None
    shape = (0, 0)
    pending_prev, pending_cur = [], []
    created = _missing_dirs(out_dir)  # removed again (when still empty) if this fails
    make_directory(out_dir, fix="give an output directory you can write to")  # one line, not the OS's bare reason
    # both write as the flows come (a long video's flows are never held) and put the result in place at commit
    sink = (RawframesWriter(out_dir / video_id, bound=bound, quality=quality) if fmt == "jpg" else
            FlowNpzWriter(out_dir / f"{video_id}.npz", bound=bound))

    def flush():
        if not pending_prev:
            return
        for flow in flow_fn(pending_prev, pending_cur):
            sink.add_flow(flow)
        pending_prev.clear()
        pending_cur.clear()
        if on_frame is not None:
            on_frame(n_frames, total)

    try:
        for rgb in frames:
            gray = _gray(rgb)
            n_frames += 1
            shape = gray.shape
            sink.add_frame(rgb)
            if on_frame is not None and n_frames == 1:
                on_frame(1, total)
            if prev_gray is not None:
                pending_prev.append(prev_gray)
                pending_cur.append(gray)
                if len(pending_prev) >= chunk:
                    flush()
            prev_gray = gray
        flush()
        if n_frames < 2:
            raise VideoError(video, f"has {n_frames} decodable frame(s); optical flow needs at least 2")
        sink.commit()
    except BaseException:
        sink.abort()
        for d in created:  # a failed run leaves no directory it made (only empty ones are removed)
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return {
        "n_frames": np.int64(n_frames),
        "n_flows": np.int64(n_frames - 1),
        "height": np.int64(shape[0]),
        "width": np.int64(shape[1]),
    }


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def flow_item(entry, params: dict) -> dict:
    """Runner stage function: ``extract_video`` for one manifest entry, options from ``params["flow"]``."""
    p = dict(params["flow"])
    out = p.pop("out")
    return extract_video(entry.path, out, video_id=entry.video_id, **p)


def run_flow(entries, options: dict, *, out, cache_root, jobs: int = 1, scheduler=None, force: bool = False):
    """Run :func:`flow_item` over ``entries`` through the stage runner; returns its ``StageResult``.

    The run holds ``out``'s lock (:func:`idtfv.lock.output_dir_lock`) as well as the runner's lock of its stage
    directory: a second run writing the same rawframes directory at the same time (with other options, or another
    ``cache_root``, hence another stage directory) fails at once instead of replacing videos under the first.
    Ids differing only in case are refused when ``out`` is on a case-insensitive file system
    (:func:`idtfv.cache.check_case_twins`: ``out/<id>/`` would be one folder for both), as the runner refuses them
    for its stage directory."""
    from idtfv.cache import check_case_twins
    from idtfv.lock import output_dir_lock
    from idtfv.runner import entry_fingerprint, run_stage

    out = Path(out)
    entries = list(entries)
    with output_dir_lock(out):
        check_case_twins([getattr(entry, "video_id", None) for entry in entries], out,
                         remedy="write the rawframes to a case-sensitive file system (--out DIR)")
        params = {"flow": {**options, "out": str(out.resolve())}}
        return run_stage("flow", flow_item, entries, params=params, cache_root=cache_root, jobs=jobs,
                         scheduler=scheduler, force=force, fingerprint=entry_fingerprint)
