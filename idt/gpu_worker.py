"""The GPU worker of ``idtfv features --device cuda``: several videos on one device at once, one CUDA stream each.

A short clip (UCF101: about 190 frames of 320x240) leaves a GPU mostly idle when its frames go through one at a
time: every kernel of a 6-level pyramid is small, and between them the host does the camera's homography, the
track pools and the decoding. So the features stage runs ``K`` (:attr:`GpuWorkerOptions.gpu_streams`) videos at
once, each in its own thread of this process with its own non-blocking CUDA stream made current
(:func:`video_stream`). CuPy's current stream is per thread, and every kernel launch and copy of the extractor's
device code takes the current stream (none names one), so each video's work is ordered on its stream and the
streams of the other videos fill the device while one thread decodes frames, fits a homography or waits for a
transfer. Decoding happens on the CPU in each video's thread (OpenCV and PyAV release the GIL), ahead of and
beside the other videos' device work; nothing about a video's output depends on ``K`` or on the other videos.

The run itself is :func:`idtfv.runner.run_stage` with ``threads=K`` (same per-video files, written atomically by
the thread that computed them, resume and ``--force``, bad videos recorded in ``index.csv`` and skipped). Each
video's ``.npz`` holds the bytes :func:`idtfv.idt.stage.features_item` gives for it alone, i.e.
``extract(path, IDTParams(device="cuda"))``'s.

Each video runs with ``IDTParams.threads = N`` (:meth:`GpuWorkerOptions.threads_per_video`: ``--host-threads``, by
default the CPU cores shared out over the K streams): for N > 1 a decode thread and N - 1 host threads of the video's
own run the keypoints of the frames ahead; every device call stays on the video's thread, so on its stream
(``docs/GPU.md``, "The host's share": K streams x N use about K N busy CPU threads). N is no parameter of the
results: the stage directory and the files are those of N = 1.

Importing this module imports neither CuPy nor Numba.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Iterator

from idtfv.options import field_error, option

__all__ = ["GpuWorkerOptions", "video_stream", "uses_gpu_worker"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class GpuWorkerOptions:
    """How the features stage uses a GPU (``idtfv features --device cuda``); no option changes an output byte.

    Parameters
    ----------
    gpu_streams : int
        Videos extracted at once on the device, each in its own thread and CUDA stream (1-64; default 4).
        More streams keep a large GPU busier on short clips; each holds one video's pyramids, flows and
        histograms on the device (about 40 MB at 320x240) and one decoder on the host.
    host_threads : int or None
        ``IDTParams.threads`` of each video (1-32): with N > 1 a decode thread and N - 1 host threads per video run
        the keypoints of the frames ahead of the device loop (one stream's host work, AKAZE above all, otherwise
        caps it near 145 frames/s of 320x240). None (default): the CPU cores this process may use, shared out over
        the streams, 1 to 8 (:meth:`threads_per_video`).
    """

    gpu_streams: int = option(4, "with --device cuda (or auto on a GPU): videos extracted at once on the device, "
                                 "each in its own thread and CUDA stream (the outputs do not depend on it)",
                              metavar="K")
    host_threads: int | None = option(None, "with --device cuda: threads per video, running decoding and the "
                                            "keypoints of the frames ahead of the device (the outputs do not "
                                            "depend on it)",
                                      metavar="N", none="CPU cores / K, 1 to 8")

    def __post_init__(self):
        value = self.gpu_streams
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
            raise field_error("GpuWorkerOptions", "gpu_streams", "an integer from 1 to 64", value, 4)
        value = self.host_threads
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32):
            raise field_error("GpuWorkerOptions", "host_threads", "an integer from 1 to 32 (or None: automatic)",
                              value, None)

    def threads_per_video(self, cores: int | None = None) -> int:
        """``IDTParams.threads`` for each video: :attr:`host_threads`, or ``cores // gpu_streams`` clipped to 1..8
        (``cores``: the CPUs this process may run on, ``os.sched_getaffinity``, when not given)."""
        if self.host_threads is not None:
            return self.host_threads
        if cores is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(8, cores // self.gpu_streams))


_local = threading.local()


@contextlib.contextmanager
def video_stream() -> Iterator[object]:
    """Make this thread's own non-blocking CUDA stream current while one video runs, then wait for its work.

    The stream is created on the thread's first video and reused for its later ones. Non-blocking: it does not
    wait for the legacy default stream (nor that one for it), so videos on other threads overlap.

    Yields
    ------
    cupy.cuda.Stream
        The thread's stream (current inside the block).
    """
    import cupy

    stream = getattr(_local, "stream", None)
    if stream is None:
        stream = _local.stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        try:
            yield stream
        finally:
            stream.synchronize()  # the video's device work is done (or failed) before the thread takes the next


def uses_gpu_worker(idt: dict, *, scheduler=None) -> bool:
    """Whether the features stage with these extractor parameters (``IDTParams.to_dict()``) runs on the GPU
    worker: ``device`` resolves to ``"cuda"`` (``auto`` on a machine where CuPy sees a device) and no Dask
    scheduler is given (Dask workers run their videos as before, one at a time each)."""
    device = idt.get("device", "cpu")
    if device == "cpu" or scheduler is not None:
        return False
    from idtfv.idt.device import resolve_device

    return resolve_device(device) == "cuda"
