"""Shared pytest fixtures for every area of idtfv.

Stable API (other test files rely on it):

* ``SHARED`` — :class:`pathlib.Path` of the ``../shared`` reference data (may not exist; skip when absent), and
  ``requires_shared`` — a ``pytest.mark.skipif`` marker for tests that need it.
* ``shared_dir`` fixture — the same path; skips the test when it is absent.
* ``tiny_video`` fixture — a factory ``tiny_video(name="tiny.avi", *, frames=12, width=64, height=48, fps=25.0,
  seed=0, motion=(2, 1)) -> Path`` that writes a small MJPG ``.avi`` into the test's ``tmp_path``: a textured
  bright square moving by ``motion = (dx, dy)`` pixels per frame over a smooth, textured background.
  ``write_tiny_video(path, ...)`` is the plain function behind it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
requires_shared = pytest.mark.skipif(not SHARED.exists(), reason="needs the ../shared reference data")


def tiny_frames(*, frames: int = 12, width: int = 64, height: int = 48, seed: int = 0,
                motion: tuple[int, int] = (2, 1)) -> np.ndarray:
    """The frames :func:`write_tiny_video` encodes, RGB uint8 ``(frames, height, width, 3)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 90 + 40 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    noise = cv2.GaussianBlur(rng.normal(0, 25, (height, width)).astype(np.float32), (0, 0), 1.0)
    background = np.clip(base + noise, 0, 255)
    out = np.empty((frames, height, width, 3), np.uint8)
    side = max(4, min(width, height) // 4)
    patch = np.clip(200 + rng.normal(0, 30, (side, side)), 0, 255).astype(np.float32)
    for t in range(frames):
        img = background.copy()
        x0 = (width // 4 + motion[0] * t) % max(1, width - side)
        y0 = (height // 4 + motion[1] * t) % max(1, height - side)
        img[y0:y0 + side, x0:x0 + side] = patch
        rgb = np.stack([img, 0.5 * img + 60, 255 - img], axis=-1)
        out[t] = np.clip(rgb, 0, 255).astype(np.uint8)
    return out


def write_tiny_video(path, *, frames: int = 12, width: int = 64, height: int = 48, fps: float = 25.0,
                     seed: int = 0, motion: tuple[int, int] = (2, 1)) -> Path:
    """Write :func:`tiny_frames` as an MJPG ``.avi`` and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"MJPG"), float(fps),
                             (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write {path}")
    try:
        for rgb in tiny_frames(frames=frames, width=width, height=height, seed=seed, motion=motion):
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


@pytest.fixture
def shared_dir() -> Path:
    """The ``../shared`` reference data directory; skips the test when it is absent."""
    if not SHARED.exists():
        pytest.skip("needs the ../shared reference data")
    return SHARED


@pytest.fixture
def tiny_video(tmp_path):
    """Factory writing small synthetic MJPG videos into ``tmp_path``; see :func:`write_tiny_video`."""

    def make(name: str = "tiny.avi", **options) -> Path:
        return write_tiny_video(tmp_path / name, **options)

    return make
