"""``--draw`` rendering (idtfv.idt.draw.TrackDrawer): the source frame rate, moving tracks drawn, the grid not."""

from __future__ import annotations

import cv2
import numpy as np

from idtfv.idt.draw import MIN_WIDTH, TrackDrawer


def _frames(path):
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return fps, frames


def test_output_plays_at_the_source_rate_and_small_videos_are_enlarged(tmp_path):
    out = tmp_path / "tracks.avi"
    gray = np.full((48, 64), 128, np.uint8)
    with TrackDrawer(out, fps=10.0) as drawer:
        for t in range(3):
            drawer(t, gray, np.zeros((0, 16, 2), np.float32), np.zeros(0, np.int32))
    fps, frames = _frames(out)
    assert abs(fps - 10.0) < 1e-6 and len(frames) == 3
    assert frames[0].shape[1] >= MIN_WIDTH and frames[0].shape[1] % 64 == 0  # integer enlargement
    assert frames[0].shape[0] * 64 == frames[0].shape[1] * 48


def test_static_grid_points_are_not_drawn_but_moving_tracks_are(tmp_path):
    gray = np.full((48, 64), 100, np.uint8)
    L = 15
    # a static grid of 30 points (each at its first position) and one track moving 10 px to the right
    grid = np.array([[x, y] for x in range(5, 60, 10) for y in range(5, 45, 8)], np.float32)
    static = np.repeat(grid[:, None, :], L + 1, axis=1)
    moving = np.zeros((1, L + 1, 2), np.float32)
    moving[0, :, 0] = 20 + np.arange(L + 1) * 1.0
    moving[0, :, 1] = 24
    pos = np.concatenate([static, moving])
    index = np.full(len(pos), 10, np.int32)

    out_static = tmp_path / "static.avi"
    with TrackDrawer(out_static, fps=5) as drawer:
        drawer(0, gray, static, index[:-1])
    out_both = tmp_path / "both.avi"
    with TrackDrawer(out_both, fps=5) as drawer:
        drawer(0, gray, pos, index)
    _, (frame_static,) = _frames(out_static)
    _, (frame_both,) = _frames(out_both)
    # the static grid leaves the picture as it was (up to the frame-number text and JPEG noise)
    body = frame_static[40:, :].astype(int)
    assert np.abs(body - 100).max() < 12
    # the moving track draws green line pixels along y = 24 between x = 20 and x = 30 (enlarged)
    z = frame_both.shape[1] // 64
    row = frame_both[int(24.5 * z - 0.5) - 1:int(24.5 * z - 0.5) + 2, int(22 * z):int(28 * z)].astype(int)
    assert (row[..., 1] - row[..., 2]).max() > 60  # green dominates red somewhere on the line
