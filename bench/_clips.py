"""The shared clips for the benchmarks: real iDT descriptors (their trajectories, extracted once and cached) for
the encoding benchmarks, and a clip looped into a longer video (:func:`loop_video`) for the memory and threads ones.

``../shared/reference/videos/`` (see ``../shared/README.md``) holds five public clips. :func:`clip_arrays` extracts
the first ``frames`` frames of each with the reference options (``IDTParams(end=frames)``, ``idtfv.idt.extract``)
and caches the arrays under ``bench/out/clips/`` (ignored by git), so the benchmarks time encoding, not extraction.
When ``../shared`` is absent the benchmarks that need real descriptors say so and skip them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "videos"
CACHE = Path(__file__).resolve().parent / "out" / "clips"
CLIPS = ("vtest_320x240", "bikes_320x240", "person01_boxing_d1_uncomp", "tree", "carphone_pristine")
#: The iDT descriptor channels, in LEAR's order.
CHANNELS = ("traj", "hog", "hof", "mbhx", "mbhy")


def clip_paths() -> dict[str, Path]:
    """{clip name: video path} of the shared clips that exist (empty without ``../shared``)."""
    if not VIDEOS.is_dir():
        return {}
    out = {}
    for name in CLIPS:
        hits = sorted(VIDEOS.glob(name + ".*"))
        if hits:
            out[name] = hits[0]
    return out


def clip_arrays(frames: int = 200, *, log=print) -> dict[str, dict[str, np.ndarray]]:
    """{clip: {"meta", "traj", "hog", "hof", "mbhx", "mbhy"}} of the first ``frames`` frames of each shared clip.

    Extracted with the default (reference) options on first use and cached in ``bench/out/clips/``.
    """
    from idtfv.idt import IDTParams, extract

    out = {}
    for name, path in clip_paths().items():
        cached = CACHE / f"{name}.f{frames}.npz"
        if cached.is_file():
            with np.load(cached) as z:
                out[name] = {k: z[k] for k in ("meta", *CHANNELS)}
            continue
        log(f"extracting {path.name} (first {frames} frames, default options) -> {cached}")
        arrays = extract(path, params=IDTParams(end=frames)).as_arrays()
        arrays = {k: np.ascontiguousarray(arrays[k]) for k in ("meta", *CHANNELS)}
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(cached.stem + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(cached)
        out[name] = arrays
    return out


def loop_video(src: Path, dst: Path, loops: int) -> int:
    """Write ``src`` ``loops`` times in a row to ``dst`` (MJPG); returns the frame count."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for _ in range(loops):
        for frame in frames:
            out.write(frame)
    out.release()
    return loops * len(frames)
