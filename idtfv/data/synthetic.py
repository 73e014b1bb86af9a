"""The built-in default dataset: seeded synthetic clips of articulated human-like figures doing actions.

Every clip shows one "actor" — a figure with filled, textured limbs (stripes that move with each limb), a head,
hands and feet — performing one of :data:`CLASSES` over a textured background, optionally filmed by a moving
camera. What distinguishes the classes is **motion only**: backgrounds, colours, position, size, facing direction
and camera motion are drawn independently of the class.

``walk``  side view, legs and arms swing, the body translates slowly.
``run``   side view, faster, larger swings, bent arms, forward lean, faster translation.
``jump``  side view, crouch then take off with the arms swinging up; vertical motion.
``wave1`` front view, one raised forearm waves from side to side.
``wave2`` front view, both raised forearms wave (mirrored).
``clap``  front view, both arms open wide and close in front of the chest.
``box``   side view, fighting stance, alternating straight punches.
``bend``  side view, the torso bends down from the hips and comes back up.

Per clip: size (actor height 45-75 % of the frame height, times the actor's own build), speed (x0.8-1.25),
phase, position, facing direction, colour jitter, background (smooth noise + optional grating + random shapes +
fine texture). About ``camera_motion`` of the clips (default half) get camera motion: a pan, a zoom, a shake, or
all three; the camera is a per-frame affine map from the world canvas to the frame, and its matrices are saved.

Actors are the groups: each of ``n_actors`` actors has fixed body proportions, limb widths, clothes colours and
stripe patterns, and performs every class ``clips_per_actor`` times. Splits hold out whole actors (3 folds over
the actors, contiguous blocks): ``split1`` tests the last third of the actors (actors 9-12 of 12: 8 train,
4 test), ``split2`` the middle third, ``split3`` the first third.

Output of :func:`generate_dataset` in ``out_dir``::

    videos/<class>/<class>_a<AA>_c<CC>.avi    MJPG, 8-bit colour
    manifest.csv                              the dataset manifest (probed)
    clips.json                                per clip: actor, class, camera kind, per-frame camera affines, ...
    dataset.json                              the generator's parameters (a rerun with the same ones is a no-op)

The same ``random_state`` and parameters give byte-identical files.

Each clip is checked as soon as it is written (read back with :func:`idtfv.video.probe_video`), so a problem stops
the run at the clip that has it: a full disk (OpenCV's writer reports nothing, it leaves an empty or short file) is
a :class:`~idtfv.errors.DiskFullError` naming that file. One generator at a time works on ``out_dir``: a second
one waits (:func:`idtfv.lock.exclusive_lock` on ``out_dir/.lock``) and then finds the dataset complete.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from idtfv.atomic import atomic_write_text, disk_full_error
from idtfv.atomic import free_bytes as _free_bytes
from idtfv.data.manifest import Manifest, VideoEntry, write_manifest
from idtfv.errors import DiskFullError, IdtfvError, ParameterError, VideoError
from idtfv.lock import LOCK_NAME, exclusive_lock

__all__ = ["CLASSES", "generate_dataset", "render_clip", "make_actor", "Actor", "CAMERA_KINDS"]

#: The action classes, in label order.
CLASSES = ("walk", "run", "jump", "wave1", "wave2", "clap", "box", "bend")

#: Camera motions given to the clips that move the camera.
CAMERA_KINDS = ("pan", "zoom", "shake", "pan+zoom+shake")

#: World canvas = frame size times this: the margin a pan/zoom/shake can move into.
_CANVAS_MARGIN = 1.3
_SHIFT = 4  # sub-pixel bits for cv2 drawing (coordinates in 1/16 px)
_GENERATOR_VERSION = 1
#: A written clip that does not read back while the file system has less free space than this: the disk is full.
_LOW_SPACE_BYTES = 4 << 20
#: Forward speed of the translating classes, body heights per second (must match the pose functions' dx).
_TRAVEL = {"walk": 0.55, "run": 1.1}


@dataclass(frozen=True)
class Actor:
    """Fixed build and clothes of one actor; lengths in body heights, colours BGR."""

    index: int
    build: float  # height factor
    torso: float
    upper_arm: float
    forearm: float
    thigh: float
    shin: float
    head_r: float
    shoulder_w: float
    hip_w: float
    w_torso: float
    w_upper_arm: float
    w_forearm: float
    w_thigh: float
    w_shin: float
    skin: tuple[int, int, int]
    shirt: tuple[int, int, int]
    pants: tuple[int, int, int]
    stripe: tuple[int, int, int]
    hair: tuple[int, int, int]
    stripes: tuple[float, ...]
    shorts: bool


def _colour(rng: np.random.Generator, *, sat=(0.3, 1.0), val=(0.25, 1.0)) -> tuple[int, int, int]:
    hsv = np.array([[[rng.uniform(0, 180), 255 * rng.uniform(*sat), 255 * rng.uniform(*val)]]], np.float32)
    bgr = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0]
    return tuple(int(c) for c in bgr)


def make_actor(index: int, *, random_state: int = 0) -> Actor:
    """The actor ``index`` of the dataset seeded by ``random_state`` (independent of every other actor)."""
    rng = np.random.default_rng([random_state, 1, index])
    j = lambda: rng.uniform(0.9, 1.1)  # noqa: E731 - per-part jitter of the proportions
    skin_v = rng.uniform(0.35, 0.95)
    skin = tuple(int(c) for c in cv2.cvtColor(np.array([[[rng.uniform(5, 20), 255 * rng.uniform(0.3, 0.6),
                                                          255 * skin_v]]], np.uint8), cv2.COLOR_HSV2BGR)[0, 0])
    shirt = _colour(rng)
    stripe = tuple(int(255 - c) if rng.random() < 0.5 else int(c * 0.35) for c in shirt)
    n_stripes = int(rng.integers(1, 4))
    return Actor(
        index=index, build=rng.uniform(0.85, 1.15),
        torso=0.30 * j(), upper_arm=0.17 * j(), forearm=0.16 * j(), thigh=0.245 * j(), shin=0.245 * j(),
        head_r=0.075 * j(), shoulder_w=0.10 * j(), hip_w=0.06 * j(),
        w_torso=0.2 * j(), w_upper_arm=0.075 * j(), w_forearm=0.062 * j(), w_thigh=0.095 * j(), w_shin=0.075 * j(),
        skin=skin, shirt=shirt, pants=_colour(rng, val=(0.15, 0.8)), stripe=stripe,
        hair=_colour(rng, sat=(0.2, 0.8), val=(0.05, 0.5)),
        stripes=tuple(sorted(rng.uniform(0.2, 0.85, n_stripes).round(3))), shorts=bool(rng.random() < 0.3),
    )


# -- poses -----------------------------------------------------------------------------------------------------------
# A pose gives absolute segment angles in radians measured from "straight down", positive towards +x (forward in side
# view; outward for both arms/legs in front view), the torso lean (positive = forward), a forward displacement dx and
# a lift (body heights).


@dataclass
class _Pose:
    view: str
    torso: float = 0.0
    arm_near: tuple[float, float] = (0.05, 0.1)
    arm_far: tuple[float, float] = (-0.05, 0.05)
    leg_near: tuple[float, float] = (0.05, 0.0)
    leg_far: tuple[float, float] = (-0.05, 0.0)
    dx: float = 0.0
    lift: float = 0.0


def _lerp(a, b, w):
    return tuple(x + (y - x) * w for x, y in zip(a, b))


def _pose_walk(t, phi, amp):
    s, c = math.sin(phi), math.cos(phi)
    thigh = 0.45 * amp * s
    flex_n, flex_f = 0.8 * max(0.0, -c) * amp, 0.8 * max(0.0, c) * amp
    return _Pose("side", torso=0.03,
                 leg_near=(thigh, thigh - flex_n), leg_far=(-thigh, -thigh - flex_f),
                 arm_near=(-0.35 * amp * s, -0.35 * amp * s + 0.3), arm_far=(0.35 * amp * s, 0.35 * amp * s + 0.3),
                 dx=0.55 * t, lift=0.012 * math.cos(2 * phi))


def _pose_run(t, phi, amp):
    s, c = math.sin(phi), math.cos(phi)
    thigh = 0.2 + 0.75 * amp * s
    thigh_f = 0.2 - 0.75 * amp * s
    flex_n = 0.3 + 1.3 * max(0.0, -c) * amp
    flex_f = 0.3 + 1.3 * max(0.0, c) * amp
    return _Pose("side", torso=0.22,
                 leg_near=(thigh, thigh - flex_n), leg_far=(thigh_f, thigh_f - flex_f),
                 arm_near=(-0.75 * amp * s, -0.75 * amp * s + 1.5), arm_far=(0.75 * amp * s, 0.75 * amp * s + 1.5),
                 dx=1.1 * t, lift=0.05 * abs(s))


def _pose_jump(t, phi, amp):
    s = math.sin(phi)
    fly, crouch = max(0.0, s), max(0.0, -s)
    thigh, shin = 1.0 * crouch, -0.9 * crouch
    arm = 2.7 * fly * amp - 0.6 * crouch
    return _Pose("side", torso=0.35 * crouch,
                 leg_near=(thigh + 0.05, shin), leg_far=(thigh - 0.05, shin - 0.05),
                 arm_near=(arm, arm + 0.2), arm_far=(arm - 0.1, arm + 0.1), lift=0.28 * amp * fly)


def _front_stand(p: _Pose) -> _Pose:
    p.leg_near, p.leg_far = (0.08, 0.04), (0.08, 0.04)
    return p


def _pose_wave1(t, phi, amp):
    wave = (2.45, math.pi + 0.55 * amp * math.sin(phi))
    return _front_stand(_Pose("front", arm_near=wave, arm_far=(0.08, 0.05)))


def _pose_wave2(t, phi, amp):
    wave = (2.45, math.pi + 0.55 * amp * math.sin(phi))
    return _front_stand(_Pose("front", arm_near=wave, arm_far=wave))


def _pose_clap(t, phi, amp):
    w = (1 + math.sin(phi)) / 2 * amp
    arm = _lerp((0.35, -1.2), (0.95, 1.9), w)
    return _front_stand(_Pose("front", arm_near=arm, arm_far=arm))


def _pose_box(t, phi, amp):
    guard, punch = (0.45, 2.5), (1.5, 1.55)
    e_n = max(0.0, math.sin(phi)) ** 1.5 * amp
    e_f = max(0.0, -math.sin(phi)) ** 1.5 * amp
    bounce = 0.012 * math.sin(2 * phi)
    return _Pose("side", torso=0.12, arm_near=_lerp(guard, punch, e_n), arm_far=_lerp((0.55, 2.6), punch, e_f),
                 leg_near=(0.3, 0.12), leg_far=(-0.3, -0.35), lift=bounce)


def _pose_bend(t, phi, amp):
    lean = 1.35 * amp * (1 - math.cos(phi)) / 2
    return _Pose("side", torso=lean, arm_near=(0.25 * lean, 0.3 * lean), arm_far=(0.2 * lean, 0.25 * lean),
                 leg_near=(-0.12 * lean, 0.0), leg_far=(-0.12 * lean - 0.04, -0.03))


#: class -> (pose function (t seconds, phase radians, amplitude) -> _Pose, cycle frequency in Hz)
_MOTIONS = {
    "walk": (_pose_walk, 1.0),
    "run": (_pose_run, 1.6),
    "jump": (_pose_jump, 1.1),
    "wave1": (_pose_wave1, 1.8),
    "wave2": (_pose_wave2, 1.8),
    "clap": (_pose_clap, 2.0),
    "box": (_pose_box, 1.4),
    "bend": (_pose_bend, 0.7),
}


# -- skeleton and drawing --------------------------------------------------------------------------------------------


def _down(a: float) -> np.ndarray:
    return np.array([math.sin(a), -math.cos(a)])


def _skeleton(actor: Actor, pose: _Pose) -> dict[str, np.ndarray]:
    """Joint positions in body units, y up, feet on the ground (y=0) unless lifted."""
    up = np.array([math.sin(pose.torso), math.cos(pose.torso)])
    across = np.array([math.cos(pose.torso), -math.sin(pose.torso)])
    front = pose.view == "front"
    pelvis = np.zeros(2)
    neck = pelvis + actor.torso * up
    j = {"pelvis": pelvis, "neck": neck, "head": neck + (actor.head_r + 0.03) * up}
    for side, sign in (("near", 1.0), ("far", -1.0)):
        sw, hw = (actor.shoulder_w * sign, actor.hip_w * sign) if front else (0.0, 0.0)
        mirror = sign if front else 1.0
        shoulder = neck - 0.025 * up + sw * across
        hip = pelvis + hw * across
        (au, af), (bt, bs) = getattr(pose, f"arm_{side}"), getattr(pose, f"leg_{side}")
        elbow = shoulder + actor.upper_arm * _down(mirror * au)
        hand = elbow + actor.forearm * _down(mirror * af)
        knee = hip + actor.thigh * _down(mirror * bt)
        ankle = knee + actor.shin * _down(mirror * bs)
        toe = ankle + (np.array([0.07, -0.01]) if not front else np.array([0.035 * sign, -0.015]))
        j.update({f"shoulder_{side}": shoulder, f"elbow_{side}": elbow, f"hand_{side}": hand, f"hip_{side}": hip,
                  f"knee_{side}": knee, f"ankle_{side}": ankle, f"toe_{side}": toe})
    ground = min(j["ankle_near"][1], j["ankle_far"][1]) - 0.03
    shift = np.array([pose.dx, pose.lift - ground])
    return {k: v + shift for k, v in j.items()}


class _Painter:
    """Draws in world pixels with anti-aliasing and sub-pixel coordinates (plain floats: this is the hot loop)."""

    def __init__(self, img: np.ndarray, origin, scale: float, mirror: float):
        self.img, self.ox, self.oy, self.scale, self.mirror = img, float(origin[0]), float(origin[1]), scale, mirror

    def px(self, p) -> tuple[float, float]:
        return self.ox + self.scale * self.mirror * float(p[0]), self.oy - self.scale * float(p[1])

    def poly(self, pts, colour):
        q = np.array(pts, dtype=np.float64) * (1 << _SHIFT)
        cv2.fillConvexPoly(self.img, np.rint(q).astype(np.int32), colour, lineType=cv2.LINE_AA, shift=_SHIFT)

    def disc(self, c, r, colour):
        k = 1 << _SHIFT
        cv2.circle(self.img, (int(round(c[0] * k)), int(round(c[1] * k))), max(1, int(round(r * k))), colour, -1,
                   lineType=cv2.LINE_AA, shift=_SHIFT)

    def limb(self, a, b, wa, wb, colour, stripe=None, stripes=()):
        """A capsule from body point a to b (widths in body units), with cross stripes fixed to the limb."""
        (ax, ay), (bx, by) = self.px(a), self.px(b)
        wa, wb = wa * self.scale, wb * self.scale
        dx, dy = bx - ax, by - ay
        length = math.hypot(dx, dy)
        nx, ny = (-dy / length, dx / length) if length > 1e-6 else (1.0, 0.0)
        self.poly([(ax + nx * wa / 2, ay + ny * wa / 2), (bx + nx * wb / 2, by + ny * wb / 2),
                   (bx - nx * wb / 2, by - ny * wb / 2), (ax - nx * wa / 2, ay - ny * wa / 2)], colour)
        self.disc((ax, ay), wa / 2, colour)
        self.disc((bx, by), wb / 2, colour)
        if stripe is not None and length > 1e-6:
            ux, uy = dx / length * max(0.6, 0.07 * length), dy / length * max(0.6, 0.07 * length)
            for f in stripes:
                cx, cy = ax + f * dx, ay + f * dy
                w = 0.47 * (wa + f * (wb - wa))
                self.poly([(cx - ux + nx * w, cy - uy + ny * w), (cx + ux + nx * w, cy + uy + ny * w),
                           (cx + ux - nx * w, cy + uy - ny * w), (cx - ux - nx * w, cy - uy - ny * w)], stripe)


@functools.lru_cache(maxsize=4096)
def _shade(colour, k):
    return tuple(int(min(255, c * k)) for c in colour)


def _draw_figure(p: _Painter, actor: Actor, j: dict[str, np.ndarray], view: str, tint: float):
    a = actor
    skin, shirt, pants = _shade(a.skin, tint), _shade(a.shirt, tint), _shade(a.pants, tint)
    stripe = _shade(a.stripe, tint)
    leg_lower = skin if a.shorts else pants

    def arm(side, k):
        p.limb(j[f"shoulder_{side}"], j[f"elbow_{side}"], a.w_upper_arm, a.w_upper_arm * 0.9, _shade(shirt, k),
               _shade(stripe, k), a.stripes[:1])
        p.limb(j[f"elbow_{side}"], j[f"hand_{side}"], a.w_forearm, a.w_forearm * 0.85, _shade(skin, k))
        p.disc(p.px(j[f"hand_{side}"]), 0.045 * p.scale, _shade(skin, 0.9 * k))

    def leg(side, k):
        p.limb(j[f"hip_{side}"], j[f"knee_{side}"], a.w_thigh, a.w_thigh * 0.85, _shade(pants, k),
               _shade(stripe, k), a.stripes)
        p.limb(j[f"knee_{side}"], j[f"ankle_{side}"], a.w_shin, a.w_shin * 0.8, _shade(leg_lower, k),
               _shade(stripe, 0.8 * k), a.stripes[-1:])
        p.limb(j[f"ankle_{side}"], j[f"toe_{side}"], 0.05, 0.04, _shade((40, 40, 40), k + 0.3))

    def torso():
        width = a.w_torso if view == "front" else 0.6 * a.w_torso
        p.limb(j["pelvis"], j["neck"], width, width * 1.1, shirt, stripe, (0.35, 0.65))
        if view == "front":  # a chest badge: a corner-rich patch fixed to the torso
            cx, cy = p.px(j["pelvis"] + 0.7 * (j["neck"] - j["pelvis"]))
            r = 0.035 * p.scale
            p.poly([(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)], stripe)

    def head():
        cx, cy = p.px(j["head"])
        r = actor.head_r * p.scale
        p.disc((cx, cy), r, skin)
        hair_c = p.px(j["head"] + np.array([-0.02 if view == "side" else 0.0, 0.03]))
        p.disc(hair_c, 0.8 * r, _shade(a.hair, tint))
        eye = 0.28 * r
        if view == "side":
            p.disc((cx + p.mirror * 0.55 * r, cy + 0.1 * r), eye, (20, 20, 20))
        else:
            for dx in (-0.4, 0.4):
                p.disc((cx + dx * r, cy + 0.15 * r), eye, (20, 20, 20))

    if view == "side":
        arm("far", 0.7)
        leg("far", 0.7)
        torso()
        head()
        leg("near", 1.0)
        arm("near", 1.0)
    else:
        leg("far", 1.0)
        leg("near", 1.0)
        torso()
        head()
        arm("far", 1.0)
        arm("near", 1.0)


# -- background and camera -------------------------------------------------------------------------------------------


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A seeded textured world canvas: smooth colour noise, an optional grating, random shapes, fine texture."""
    small = rng.uniform(40, 215, (max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    base = np.array(_colour(rng, sat=(0.1, 0.6), val=(0.3, 0.8)), np.float32)
    img = 0.4 * img + 0.6 * base
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.6:
        theta, lam = rng.uniform(0, np.pi), rng.uniform(5, 18)
        g = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / lam + rng.uniform(0, 2 * np.pi))
        img += rng.uniform(10, 35) * g[..., None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(6, 16))):
        colour = _colour(rng, sat=(0.1, 0.9), val=(0.2, 0.9))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        size = rng.uniform(4, 0.18 * w)
        if rng.random() < 0.5:
            ang = rng.uniform(0, np.pi)
            box = cv2.boxPoints(((cx, cy), (size, size * rng.uniform(0.3, 1.0)), np.degrees(ang)))
            cv2.fillConvexPoly(img, np.round(box * 16).astype(np.int32), colour, cv2.LINE_AA, _SHIFT)
        else:
            cv2.circle(img, (int(cx * 16), int(cy * 16)), int(size * 8), colour, -1, cv2.LINE_AA, _SHIFT)
    noise = cv2.GaussianBlur(rng.normal(0, 9, (h, w, 1)).astype(np.float32), (0, 0), 0.8)
    return np.clip(img.astype(np.float32) + noise.reshape(h, w, 1), 0, 255).astype(np.uint8)


def _camera(rng: np.random.Generator, kind: str, n_frames: int, size: tuple[int, int],
            canvas: tuple[int, int]) -> np.ndarray:
    """Per-frame affine maps world canvas -> frame, ``(n_frames, 2, 3)`` float64."""
    w, h = size
    cw, ch = canvas
    t = np.arange(n_frames, dtype=np.float64)
    centre = np.tile([(cw - w) // 2 + w / 2, (ch - h) // 2 + h / 2], (n_frames, 1))
    zoom = np.ones(n_frames)
    margin = np.array([(cw - w) / 2, (ch - h) / 2])
    if "pan" in kind:
        ang = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.5, 0.9) * margin * np.array([abs(np.cos(ang)), abs(np.sin(ang))])
        direction = np.sign([np.cos(ang), np.sin(ang)])
        centre += (t / max(1, n_frames - 1) - 0.5)[:, None] * 2 * dist * direction
    if "zoom" in kind:
        end = rng.uniform(0.1, 0.2) * (1 if rng.random() < 0.5 else -0.7)
        zoom = 1 + end * t / max(1, n_frames - 1)
    if "shake" in kind:
        amp = rng.uniform(0.8, 2.0)
        jitter = rng.normal(0, 1, (n_frames + 4, 2))
        jitter = np.stack([np.convolve(jitter[:, i], np.ones(3) / 3, mode="valid")[:n_frames] for i in range(2)], 1)
        centre += amp * jitter / (jitter.std() + 1e-9)
    m = np.zeros((n_frames, 2, 3))
    m[:, 0, 0] = m[:, 1, 1] = zoom
    m[:, 0, 2] = w / 2 - zoom * centre[:, 0]
    m[:, 1, 2] = h / 2 - zoom * centre[:, 1]
    return m


# -- clips -----------------------------------------------------------------------------------------------------------


def _clip_params(actor: Actor, label: int, clip: int, *, n_frames: int, size, fps: float, random_state: int,
                 camera_motion: float) -> dict:
    rng = np.random.default_rng([random_state, 2, actor.index, label, clip])
    w, h = size
    cw, ch = int(round(w * _CANVAS_MARGIN)), int(round(h * _CANVAS_MARGIN))
    name = CLASSES[label]
    speed = float(rng.uniform(0.8, 1.25))
    height_px = float(h * rng.uniform(0.45, 0.75) * actor.build)
    mirror = float(1 if rng.random() < 0.5 else -1)
    duration = n_frames / fps
    travel = _TRAVEL.get(name, 0.0) * speed * duration * height_px
    if travel > 0.75 * w:  # keep the walker/runner in view: shrink the actor rather than let it leave
        height_px *= 0.75 * w / travel
        travel = 0.75 * w
    ox, oy = (cw - w) // 2, (ch - h) // 2
    x0 = ox + w / 2 + rng.uniform(-0.2, 0.2) * w - mirror * travel / 2
    ground = oy + h * rng.uniform(0.8, 0.95)
    moving = bool(rng.random() < camera_motion)
    return {
        "rng_seed": [random_state, 3, actor.index, label, clip],
        "speed": speed, "phase": float(rng.uniform(0, 2 * np.pi)), "amp": float(rng.uniform(0.85, 1.1)),
        "height_px": height_px, "mirror": mirror, "x0": float(x0), "ground": float(ground),
        "tint": float(rng.uniform(0.85, 1.15)),
        "camera": CAMERA_KINDS[int(rng.integers(len(CAMERA_KINDS)))] if moving else "static",
        "canvas": (cw, ch),
    }


def render_clip(actor: Actor, label: int, params: dict, *, n_frames: int, size: tuple[int, int],
                fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Render one clip.

    Returns
    -------
    frames : ndarray, uint8, shape (n_frames, H, W, 3)
        BGR frames (OpenCV order, ready for ``cv2.VideoWriter``).
    camera : ndarray, float64, shape (n_frames, 2, 3)
        Affine map from world canvas pixels to frame pixels at each frame (the planted camera motion).
    """
    rng = np.random.default_rng(params["rng_seed"])
    cw, ch = params["canvas"]
    w, h = size
    bg = _background(rng, cw, ch)
    camera = _camera(rng, params["camera"], n_frames, size, (cw, ch))
    pose_fn, freq = _MOTIONS[CLASSES[label]]
    frames = np.empty((n_frames, h, w, 3), np.uint8)
    canvas = np.empty_like(bg)
    static = None
    offset = -camera[:, :, 2]
    if (np.all(camera[:, :, :2] == np.eye(2)) and np.all(offset == offset[0])
            and np.all(offset[0] == np.round(offset[0]))
            and 0 <= offset[0, 0] <= cw - w and 0 <= offset[0, 1] <= ch - h):
        static = (int(offset[0, 0]), int(offset[0, 1]))
    for i in range(n_frames):
        t = i / fps
        pose = pose_fn(t * params["speed"], 2 * np.pi * freq * params["speed"] * t + params["phase"], params["amp"])
        joints = _skeleton(actor, pose)
        np.copyto(canvas, bg)
        painter = _Painter(canvas, np.array([params["x0"], params["ground"]]), params["height_px"], params["mirror"])
        _draw_figure(painter, actor, joints, pose.view, params["tint"])
        if static is not None:  # an integer translation: a crop is exactly what warpAffine would give
            frames[i] = canvas[static[1]:static[1] + h, static[0]:static[0] + w]
        else:
            frames[i] = cv2.warpAffine(canvas, camera[i], (w, h), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REFLECT101)
    return frames, camera


def _write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    from idtfv.video import opencv_path

    h, w = frames.shape[1:3]
    fourcc = cv2.VideoWriter_fourcc(*"MJPG")
    with opencv_path(path) as name:  # a root that is not UTF-8 crashed OpenCV
        writer = cv2.VideoWriter(name, cv2.CAP_FFMPEG, fourcc, float(fps), (w, h))
        if not writer.isOpened():
            writer = cv2.VideoWriter(name, cv2.CAP_OPENCV_MJPEG, fourcc, float(fps), (w, h))
        if not writer.isOpened():
            raise IdtfvError(f"{path}: OpenCV cannot write MJPG .avi files here (no FFmpeg and no built-in MJPEG "
                             "writer); install opencv-contrib-python-headless")
        try:
            for f in frames:
                writer.write(f)
        finally:
            writer.release()


def _check_clip(path: Path, n_frames: int, *, probe: bool):
    """Check a clip just written; return its :class:`~idtfv.video.VideoInfo` (``probe``) or None.

    OpenCV's writer reports no error, not even on a full disk: it leaves an empty or short file. So the clip is
    read back, and a clip that is unusable stops the run: a :class:`DiskFullError` naming it when the file system
    is (nearly) full, else an :class:`IdtfvError` naming it and blaming the writer.
    """
    from idtfv.video import probe_video

    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    problem, info = None, None
    if size == 0:
        problem = "the file is empty"
    elif probe:
        try:
            info = probe_video(path)
        except VideoError as exc:
            problem = exc.problem
        else:
            if info.frames != n_frames:
                problem = f"it reads back with {info.frames} frames, expected {n_frames}"
    if problem is None:
        return info
    if _free_bytes(path.parent) < _LOW_SPACE_BYTES:
        raise DiskFullError(path)
    raise IdtfvError(f"{path}: the generated video is unusable ({problem}); the OpenCV video writer or reader is "
                     "broken here (reinstall opencv-contrib-python-headless)")


# -- the dataset -----------------------------------------------------------------------------------------------------


def _fold_of(actor: int, n_actors: int) -> int:
    """Fold (0, 1, 2) of an actor: contiguous thirds, fold 2 = the last third."""
    return min(2, actor * 3 // n_actors)


def generate_dataset(
    out_dir: str | os.PathLike,
    *,
    n_classes: int = 8,
    n_actors: int = 12,
    clips_per_actor: int = 1,
    n_frames: int = 40,
    size: tuple[int, int] = (160, 120),
    fps: float = 25,
    random_state: int = 0,
    camera_motion: float = 0.5,
    probe: bool = True,
    force: bool = False,
) -> Path:
    """Write the synthetic default dataset (videos + manifest) into ``out_dir``; return the manifest's path.

    Parameters
    ----------
    out_dir : path-like
        Output directory (created). If it already holds a complete dataset made with the same parameters, nothing is
        redone (unless ``force``).
    n_classes : int
        The first ``n_classes`` of :data:`CLASSES` (2..8).
    n_actors : int
        Actors (groups), at least 3 so that each of the 3 actor folds is non-empty.
    clips_per_actor : int
        Clips per actor and class. Total clips = ``n_classes * n_actors * clips_per_actor`` (default 96).
    n_frames : int
        Frames per clip (>= 2).
    size : (int, int)
        Frame ``(width, height)``.
    fps : float
        Frame rate written into the files.
    random_state : int
        Seed; the same seed and parameters give byte-identical files.
    camera_motion : float
        Fraction (probability per clip) of clips filmed by a moving camera, in [0, 1].
    probe : bool
        Fill frames/fps/width/height in the manifest by reading each file back as soon as it is written (a clip
        that does not read back with ``n_frames`` frames stops the run).
    force : bool
        Regenerate even when a matching dataset is present.

    Returns
    -------
    pathlib.Path
        ``out_dir/manifest.csv``.

    Raises
    ------
    DiskFullError
        The file system is full: names the file that did not fit; the run stops there.
    IdtfvError
        A written clip does not read back (the OpenCV writer is broken here): names the clip.
    """
    if not isinstance(n_classes, int) or not 2 <= n_classes <= len(CLASSES):
        raise ParameterError(f"n_classes must be an integer in 2..{len(CLASSES)}, got {n_classes!r}")
    if not isinstance(n_actors, int) or n_actors < 3:
        raise ParameterError(f"n_actors must be an integer >= 3 (3 actor folds make the splits), got {n_actors!r}")
    if not isinstance(clips_per_actor, int) or clips_per_actor < 1:
        raise ParameterError(f"clips_per_actor must be a positive integer, got {clips_per_actor!r}")
    if not isinstance(n_frames, int) or n_frames < 2:
        raise ParameterError(f"n_frames must be an integer >= 2, got {n_frames!r}")
    if len(size) != 2 or not all(isinstance(s, int) and 16 <= s <= 4096 for s in size):
        raise ParameterError(f"size must be (width, height) with integers in 16..4096, got {size!r}")
    if not 1 <= fps <= 1000:
        raise ParameterError(f"fps must be in 1..1000, got {fps!r}")
    if not 0.0 <= camera_motion <= 1.0:
        raise ParameterError(f"camera_motion must be a fraction in [0, 1], got {camera_motion!r}")
    out_dir = Path(out_dir).resolve()
    settings = {"generator_version": _GENERATOR_VERSION, "n_classes": n_classes, "n_actors": n_actors,
                "clips_per_actor": clips_per_actor, "n_frames": n_frames, "size": list(size), "fps": float(fps),
                "random_state": int(random_state), "camera_motion": float(camera_motion), "probe": bool(probe)}
    manifest_path = out_dir / "manifest.csv"
    stamp = out_dir / "dataset.json"
    if not force and _is_complete(out_dir, stamp, settings):
        return manifest_path

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # One generator at a time: a second one waits here, then finds the dataset complete (it never deletes
        # the videos/ of a run in progress).
        with exclusive_lock(out_dir / LOCK_NAME, what="dataset generation", wait=True):
            if not force and _is_complete(out_dir, stamp, settings):
                return manifest_path
            _generate(out_dir, manifest_path, stamp, settings, n_classes=n_classes, n_actors=n_actors,
                      clips_per_actor=clips_per_actor, n_frames=n_frames, size=size, fps=fps,
                      random_state=random_state, camera_motion=camera_motion, probe=probe)
    except OSError as exc:
        full = disk_full_error(exc, out_dir)
        if full is None:
            raise
        raise full from exc
    return manifest_path


def _generate(out_dir: Path, manifest_path: Path, stamp: Path, settings: dict, *, n_classes, n_actors,
              clips_per_actor, n_frames, size, fps, random_state, camera_motion, probe) -> None:
    """Write the videos, then the manifest, ``clips.json`` and (last: the dataset is complete) ``dataset.json``."""
    stamp.unlink(missing_ok=True)  # invalid until the end
    videos_dir = out_dir / "videos"
    if videos_dir.exists():
        shutil.rmtree(videos_dir)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # tiny frames: OpenCV's thread pool only adds overhead (and contention on busy machines)
    try:
        rows, clips = _render_all(videos_dir, n_classes=n_classes, n_actors=n_actors,
                                  clips_per_actor=clips_per_actor, n_frames=n_frames, size=size, fps=fps,
                                  random_state=random_state, camera_motion=camera_motion, probe=probe)
    finally:
        cv2.setNumThreads(threads)
    manifest = Manifest(rows, out_dir, class_names=list(CLASSES[:n_classes]), source=str(manifest_path))
    write_manifest(manifest, manifest_path)
    _write_json(out_dir / "clips.json", {"camera_affine": "world canvas -> frame, row-major 2x3 per frame",
                                         "clips": clips})
    _write_json(stamp, settings)


def _render_all(videos_dir: Path, *, n_classes, n_actors, clips_per_actor, n_frames, size, fps, random_state,
                camera_motion, probe) -> tuple[list[VideoEntry], dict]:
    actors = [make_actor(a, random_state=random_state) for a in range(n_actors)]
    rows, clips = [], {}
    for label in range(n_classes):
        name = CLASSES[label]
        (videos_dir / name).mkdir(parents=True, exist_ok=True)
        for actor in actors:
            for clip in range(clips_per_actor):
                video_id = f"{name}_a{actor.index + 1:02d}_c{clip + 1:02d}"
                params = _clip_params(actor, label, clip, n_frames=n_frames, size=size, fps=fps,
                                      random_state=random_state, camera_motion=camera_motion)
                frames, camera = render_clip(actor, label, params, n_frames=n_frames, size=size, fps=fps)
                path = videos_dir / name / f"{video_id}.avi"
                _write_video(path, frames, fps)
                info = _check_clip(path, n_frames, probe=probe)  # the probe columns of the manifest
                fold = _fold_of(actor.index, n_actors)
                splits = {s: ("test" if fold == 3 - s else "train") for s in (1, 2, 3)}
                probed = {} if info is None else {"frames": info.frames, "fps": info.fps, "width": info.width,
                                                  "height": info.height}
                rows.append(VideoEntry(video_id=video_id, path=path, label=label, label_name=name,
                                       group=f"a{actor.index + 1:02d}", splits=splits, **probed))
                clips[video_id] = {
                    "label": label, "class": name, "actor": actor.index + 1, "camera": params["camera"],
                    "mirror": params["mirror"], "speed": round(params["speed"], 6),
                    "height_px": round(params["height_px"], 4),
                    "camera_affine": np.round(camera.reshape(n_frames, 6), 5).tolist(),
                }
    return rows, clips


def _write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _is_complete(out_dir: Path, stamp: Path, settings: dict) -> bool:
    try:
        if json.loads(stamp.read_text(encoding="utf-8")) != settings:
            return False
        from idtfv.data.manifest import read_manifest

        return all(e.path.is_file() for e in read_manifest(out_dir / "manifest.csv").rows)
    except (OSError, ValueError, IdtfvError):
        return False

