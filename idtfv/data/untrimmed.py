"""The untrimmed variant of the built-in default dataset: long seeded videos with planted action intervals.

Each video shows one actor of the default dataset (:func:`idtfv.data.synthetic.make_actor`, by default one of the
actors that split 1 tests on, so a detector trained on split 1's training clips never saw them) in front of one
textured background (the default dataset's renderer: ``_background``, ``_camera``, ``_skeleton``,
``_draw_figure``). The video alternates **background** stretches and **actions**:

- background: the actor stands (side view, breathing slightly), while a textured ball drifts and bounces across
  the scene for the whole video (motion that is no action), and the camera may pan, zoom or shake
  (``camera_motion`` of the videos);
- action: ``actions_per_video`` distinct classes of :data:`idtfv.data.synthetic.CLASSES`, each performed for
  ``action_seconds`` (drawn in the range) with the pose functions of the default dataset. Walkers and runners turn
  round at the edges of the frame instead of leaving it.

The planted intervals are written to ``annotations.csv`` (``video_id,class,start,end``, seconds; an action starts
at its first frame and ends after its last: ``[first / fps, (last + 1) / fps]``).

Output of :func:`generate_untrimmed` in ``out_dir``::

    videos/<video_id>.avi     MJPG, 8-bit colour (video ids ``untrimmed_v<VV>``)
    manifest.csv              the manifest: labels = the classes present (multi-label), split1 = test
    annotations.csv           the planted intervals
    untrimmed.json            the generator's parameters (written last; a rerun with the same ones is a no-op)

The same ``random_state`` and parameters give byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np

from idtfv.atomic import atomic_write_text
from idtfv.data.manifest import Manifest, VideoEntry, read_manifest, write_manifest
from idtfv.data.synthetic import (_CANVAS_MARGIN, _MOTIONS, _TRAVEL, CAMERA_KINDS, CLASSES, _background, _camera,
                                  _check_clip, _draw_figure, _Painter, _Pose, _skeleton, _write_video, make_actor)
from idtfv.errors import IdtfvError, ParameterError
from idtfv.lock import LOCK_NAME, exclusive_lock

__all__ = ["generate_untrimmed", "render_untrimmed", "add_dataset_untrimmed", "ANNOTATIONS"]

ANNOTATIONS = "annotations.csv"
_VERSION = 1
_STAMP = "untrimmed.json"


def _idle_pose(t: float, phi: float, amp: float) -> _Pose:
    """Standing still, side view, a slight breathing lift."""
    return _Pose("side", lift=0.004 * math.sin(2 * math.pi * 0.3 * t))


def _plan(rng: np.random.Generator, *, n_classes: int, actions: int, action_seconds, gap_seconds,
          fps: float) -> list[tuple[int, int, int]]:
    """[(label or -1 for background, first frame, n_frames), ...] covering the video."""
    labels = rng.choice(n_classes, size=actions, replace=False)
    segs, frame = [], 0
    for label in [*labels.tolist(), None]:
        gap = max(1, int(round(rng.uniform(*gap_seconds) * fps)))
        segs.append((-1, frame, gap))
        frame += gap
        if label is not None:
            n = max(2, int(round(rng.uniform(*action_seconds) * fps)))
            segs.append((int(label), frame, n))
            frame += n
    return segs


def render_untrimmed(index: int, *, n_classes: int = 8, actors=(8, 9, 10, 11), actions_per_video: int = 3,
                     action_seconds=(2.0, 4.0), gap_seconds=(1.5, 4.0), size=(160, 120), fps: float = 25,
                     random_state: int = 0, camera_motion: float = 0.5):
    """Render untrimmed video ``index``.

    Returns
    -------
    frames : (T, H, W, 3) uint8 BGR.
    segments : list of (label, first frame, frames); label -1 = background.
    info : dict (actor, camera kind).
    """
    rng = np.random.default_rng([random_state, 7, index])
    actor = make_actor(int(actors[index % len(actors)]), random_state=random_state)
    segs = _plan(rng, n_classes=n_classes, actions=actions_per_video, action_seconds=action_seconds,
                 gap_seconds=gap_seconds, fps=fps)
    T = segs[-1][1] + segs[-1][2]
    w, h = size
    cw, ch = int(round(w * _CANVAS_MARGIN)), int(round(h * _CANVAS_MARGIN))
    ox, oy = (cw - w) // 2, (ch - h) // 2
    bg = _background(rng, cw, ch)
    kind = CAMERA_KINDS[int(rng.integers(len(CAMERA_KINDS)))] if rng.random() < camera_motion else "static"
    camera = _camera(rng, kind, T, size, (cw, ch))
    height = float(h * rng.uniform(0.45, 0.6) * actor.build)
    tint = float(rng.uniform(0.85, 1.15))
    ground = oy + h * rng.uniform(0.85, 0.95)
    x = ox + w * rng.uniform(0.35, 0.65)
    mirror = float(1 if rng.random() < 0.5 else -1)
    ball_r = h * rng.uniform(0.06, 0.1)
    ball = np.array([rng.uniform(ox + ball_r, ox + w - ball_r), rng.uniform(oy + ball_r, oy + 0.5 * h)])
    ang = rng.uniform(0, 2 * np.pi)
    ball_v = rng.uniform(0.6, 1.4) * h / fps * np.array([math.cos(ang), 0.5 * math.sin(ang)])
    ball_colour = tuple(int(c) for c in rng.integers(30, 226, 3))
    ball_stripe = tuple(255 - c for c in ball_colour)
    lo, hi = ox + 0.15 * w, ox + 0.85 * w
    frames = np.empty((T, h, w, 3), np.uint8)
    canvas = np.empty_like(bg)
    for label, first, n in segs:
        if label < 0:
            pose_fn, freq, speed, phase, amp = _idle_pose, 1.0, 1.0, 0.0, 1.0
        else:
            pose_fn, freq = _MOTIONS[CLASSES[label]]
            speed, phase, amp = float(rng.uniform(0.8, 1.25)), float(rng.uniform(0, 2 * np.pi)), \
                float(rng.uniform(0.85, 1.1))
        prev_dx = None
        for i in range(n):
            t = i / fps
            pose = pose_fn(t * speed, 2 * np.pi * freq * speed * t + phase, amp)
            if label >= 0 and CLASSES[label] in _TRAVEL:  # translate the actor ourselves; turn round at the edges
                step = 0.0 if prev_dx is None else (pose.dx - prev_dx) * height
                prev_dx = pose.dx
                if not lo <= x + mirror * step <= hi:
                    mirror = -mirror
                x += mirror * step
            pose.dx = 0.0
            joints = _skeleton(actor, pose)
            np.copyto(canvas, bg)
            f = first + i
            bx, by = ball
            cv2.circle(canvas, (int(bx * 16), int(by * 16)), int(ball_r * 16), ball_colour, -1, cv2.LINE_AA, 4)
            cv2.line(canvas, (int((bx - ball_r) * 16), int(by * 16)), (int((bx + ball_r) * 16), int(by * 16)),
                     ball_stripe, 2, cv2.LINE_AA, 4)
            _draw_figure(_Painter(canvas, np.array([x, ground]), height, mirror), actor, joints, pose.view, tint)
            frames[f] = cv2.warpAffine(canvas, camera[f], (w, h), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REFLECT101)
            ball += ball_v
            for d, (lo_b, hi_b) in enumerate(((ox + ball_r, ox + w - ball_r), (oy + ball_r, oy + 0.6 * h))):
                if not lo_b <= ball[d] <= hi_b:
                    ball_v[d] = -ball_v[d]
                    ball[d] = min(max(ball[d], lo_b), hi_b)
    return frames, segs, {"actor": actor.index + 1, "camera": kind}


def generate_untrimmed(out_dir, *, n_videos: int = 4, n_classes: int = 8, actors=(8, 9, 10, 11),
                       actions_per_video: int = 3, action_seconds=(2.0, 4.0), gap_seconds=(1.5, 4.0),
                       size: tuple[int, int] = (160, 120), fps: float = 25, random_state: int = 0,
                       camera_motion: float = 0.5, probe: bool = True, force: bool = False) -> Path:
    """Write the untrimmed synthetic set (videos, manifest, annotations) into ``out_dir``; return the manifest.

    Parameters
    ----------
    out_dir : output directory (created); a complete set with the same parameters is kept unless ``force``.
    n_videos : number of videos (>= 1).
    n_classes : classes drawn from, the first ``n_classes`` of :data:`idtfv.data.synthetic.CLASSES` (2..8).
    actors : actor indices (0-based, as :func:`~idtfv.data.synthetic.make_actor`) used in turn; default the
        actors split 1 of the default dataset (12 actors) tests on.
    actions_per_video : distinct actions per video (1..n_classes).
    action_seconds, gap_seconds : (min, max) duration of an action and of a background stretch, seconds.
    size, fps, random_state, camera_motion : as :func:`idtfv.data.synthetic.generate_dataset`.
    probe : fill the manifest's probe columns (and check every file reads back).
    force : regenerate even when a matching set is present.
    """
    if not isinstance(n_videos, int) or n_videos < 1:
        raise ParameterError(f"n_videos must be a positive integer, got {n_videos!r}")
    if not isinstance(n_classes, int) or not 2 <= n_classes <= len(CLASSES):
        raise ParameterError(f"n_classes must be an integer in 2..{len(CLASSES)}, got {n_classes!r}")
    if not isinstance(actions_per_video, int) or not 1 <= actions_per_video <= n_classes:
        raise ParameterError(f"actions_per_video must be an integer in 1..{n_classes} (distinct classes), got "
                             f"{actions_per_video!r}")
    for name, rng_ in (("action_seconds", action_seconds), ("gap_seconds", gap_seconds)):
        if len(rng_) != 2 or not 0 < rng_[0] <= rng_[1]:
            raise ParameterError(f"{name} must be (min, max) seconds with 0 < min <= max, got {rng_!r}")
    actors = tuple(int(a) for a in actors)
    if not actors or min(actors) < 0:
        raise ParameterError(f"actors must be non-negative actor indices, got {actors!r}")
    if not 1 <= fps <= 1000:
        raise ParameterError(f"fps must be in 1..1000, got {fps!r}")
    if not isinstance(random_state, (int, np.integer)) or random_state < 0:  # NumPy seeds are non-negative
        raise ParameterError(f"random_state (--seed) must be a non-negative integer, got {random_state!r}")
    out_dir = Path(out_dir).resolve()
    blocked = next((q for q in (out_dir, *out_dir.parents) if q.exists()), None)
    if blocked is not None and not blocked.is_dir():
        raise ParameterError(f"{blocked}: exists and is not a directory; the untrimmed set is written into "
                             f"{out_dir}/: give a directory there")
    settings = {"version": _VERSION, "n_videos": n_videos, "n_classes": n_classes, "actors": list(actors),
                "actions_per_video": actions_per_video, "action_seconds": [float(v) for v in action_seconds],
                "gap_seconds": [float(v) for v in gap_seconds], "size": list(size), "fps": float(fps),
                "random_state": int(random_state), "camera_motion": float(camera_motion), "probe": bool(probe)}
    manifest_path = out_dir / "manifest.csv"
    if not force and _is_complete(out_dir, settings):
        return manifest_path
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out_dir / LOCK_NAME, what="untrimmed dataset generation", wait=True):
        if not force and _is_complete(out_dir, settings):
            return manifest_path
        (out_dir / _STAMP).unlink(missing_ok=True)
        videos = out_dir / "videos"
        if videos.exists():
            shutil.rmtree(videos)
        videos.mkdir(parents=True)
        rows, lines, clips = [], ["video_id,class,start,end"], {}
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            for v in range(n_videos):
                video_id = f"untrimmed_v{v + 1:02d}"
                frames, segs, info = render_untrimmed(
                    v, n_classes=n_classes, actors=actors, actions_per_video=actions_per_video,
                    action_seconds=action_seconds, gap_seconds=gap_seconds, size=size, fps=fps,
                    random_state=random_state, camera_motion=camera_motion)
                path = videos / f"{video_id}.avi"
                _write_video(path, frames, fps)
                probed = _check_clip(path, len(frames), probe=probe)
                present = sorted({label for label, _, _ in segs if label >= 0})
                for label, first, n in segs:
                    if label >= 0:
                        lines.append(f"{video_id},{CLASSES[label]},{first / fps:.3f},{(first + n) / fps:.3f}")
                extra = {} if probed is None else {"frames": probed.frames, "fps": probed.fps,
                                                   "width": probed.width, "height": probed.height}
                rows.append(VideoEntry(video_id=video_id, path=path, label=present[0], labels=tuple(present),
                                       label_name=";".join(CLASSES[k] for k in present), group=f"a{info['actor']:02d}",
                                       splits={1: "test"}, **extra))
                clips[video_id] = {**info, "frames": len(frames),
                                   "segments": [[CLASSES[k] if k >= 0 else "background", f, n] for k, f, n in segs]}
        finally:
            cv2.setNumThreads(threads)
        write_manifest(Manifest(rows, out_dir, class_names=list(CLASSES[:n_classes]), source=str(manifest_path)),
                       manifest_path)
        atomic_write_text(out_dir / ANNOTATIONS, "\n".join(lines) + "\n")
        atomic_write_text(out_dir / "clips.json", json.dumps(clips, indent=1, sort_keys=True) + "\n")
        atomic_write_text(out_dir / _STAMP, json.dumps(settings, indent=1, sort_keys=True) + "\n")
    return manifest_path


def _is_complete(out_dir: Path, settings: dict) -> bool:
    try:
        if json.loads((out_dir / _STAMP).read_text(encoding="utf-8")) != settings:
            return False
        return (out_dir / ANNOTATIONS).is_file() and all(
            e.path.is_file() for e in read_manifest(out_dir / "manifest.csv").rows)
    except (OSError, ValueError, IdtfvError):
        return False


# ------------------------------------------------------------------------------------------------ command
def add_dataset_untrimmed(subparsers) -> None:
    """Add ``idtfv dataset-untrimmed``."""
    p = subparsers.add_parser(
        "dataset-untrimmed", help="write the untrimmed synthetic set (long videos with planted action intervals)",
        description="Generate seeded untrimmed videos of the default dataset's actors and actions with background "
                    "stretches between the actions; write the videos, manifest.csv (in the directory of --out) and "
                    "annotations.csv (video_id,class,start,end) beside it.")
    p.add_argument("--out", type=Path, required=True, metavar="MANIFEST.csv", help="manifest to write")
    p.add_argument("--videos", type=int, default=4, help="number of videos (default 4)")
    p.add_argument("--actions", type=int, default=3, help="distinct actions per video (default 3)")
    p.add_argument("--classes", type=int, default=8, help="classes drawn from, 2..8 (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0; the default dataset's actors)")
    p.set_defaults(func=_cmd_dataset_untrimmed)


def _cmd_dataset_untrimmed(args: argparse.Namespace) -> int:
    if args.out.name != "manifest.csv":
        raise ParameterError(f"--out {args.out}: the untrimmed set writes DIR/manifest.csv; give a path ending in "
                             "manifest.csv")
    path = generate_untrimmed(args.out.parent, n_videos=args.videos, n_classes=args.classes,
                              actions_per_video=args.actions, random_state=args.seed)
    print(f"wrote {path} and {path.parent / ANNOTATIONS}")
    return 0

