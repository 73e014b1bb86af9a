"""Render live tracks over the video (``extract-trajectories --draw tracks.mp4``) so a person can see them.

Tracks of the finest scale are drawn as polylines from their first point to their current one (older segments
darker), with a dot at the current point, over the grey frame, as LEAR's ``DenseTrackStab`` shows them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from idtfv.errors import VideoError

__all__ = ["TrackDrawer"]


class TrackDrawer:
    """Writes one annotated frame per call.

    Parameters
    ----------
    path : path
        Output video (``.mp4`` with the ``mp4v`` codec, ``.avi`` with MJPG).
    fps : float
        Frame rate of the output.
    """

    def __init__(self, path, fps: float | None = None):
        self.path = Path(path)
        self.fps = float(fps) if fps else 25.0
        self._writer = None

    def _open(self, w: int, h: int) -> None:
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
        self._writer = cv2.VideoWriter(str(self.path), cv2.CAP_FFMPEG, fourcc, self.fps, (w, h))
        if not self._writer.isOpened():
            raise VideoError(self.path, "cannot open the --draw output for writing; use a .mp4 or .avi name in a "
                                        "writable directory")

    def __call__(self, frame_num: int, gray: np.ndarray, pos: np.ndarray, index: np.ndarray) -> None:
        """Draw tracks ``pos (k, L+1, 2)`` (first ``index[k]+1`` points valid, level-0 pixels) on ``gray``."""
        h, w = gray.shape[:2]
        if self._writer is None:
            self._open(w, h)
        img = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
        L = pos.shape[1] - 1
        for k in range(len(pos)):
            n = int(index[k]) + 1
            pts = pos[k, :n]
            for j in range(1, n):
                c = int(255 * (j + 1) / (L + 1))
                p0 = (int(round(pts[j - 1, 0])), int(round(pts[j - 1, 1])))
                p1 = (int(round(pts[j, 0])), int(round(pts[j, 1])))
                cv2.line(img, p0, p1, (0, c, 0), 1, cv2.LINE_AA)
            x, y = pts[n - 1]
            cv2.circle(img, (int(round(x)), int(round(y))), 1, (0, 0, 255), -1, cv2.LINE_AA)
        cv2.putText(img, str(frame_num), (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        self._writer.write(img)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
