"""Render live tracks over the video (``extract-trajectories --draw tracks.mp4``) so a person can see them.

Tracks of the finest scale are drawn as polylines from their first point to their current one (older segments
darker), with a dot at the current point, over the grey frame, as LEAR's ``DenseTrackStab`` shows them. Tracks
that have not moved (less than :data:`MIN_EXTENT` px from their first point) are not drawn: on a static
background they are the dense-sampling grid itself, which would hide the picture. Small videos are drawn
enlarged (to at least :data:`MIN_WIDTH` px wide, by an integer factor) so the tracks stay visible. The output
plays at the source's frame rate. The video is written under a temporary name next to the output and renamed
onto it by :meth:`TrackDrawer.close`; :meth:`TrackDrawer.abort` (a failed or interrupted run) removes it, so no
partial drawing is left.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import cv2
import numpy as np

from idtfv.atomic import free_bytes, remove_stale_temps, temp_name, writer_tag
from idtfv.errors import DiskFullError, VideoError
from idtfv.video import opencv_path

__all__ = ["TrackDrawer", "MIN_EXTENT", "MIN_WIDTH"]

#: A track is drawn once its current point is at least this far (px, level 0) from its first one.
MIN_EXTENT = 1.0
#: Frames narrower than this are enlarged by an integer factor before drawing.
MIN_WIDTH = 480
#: The stem of the drawing's temporary name (ASCII whatever the output's name: OpenCV's writer opens it).
DRAW_TEMP = "idtfv-draw"


class TrackDrawer:
    """Writes one annotated frame per call.

    Parameters
    ----------
    path : path
        Output video (``.mp4`` with the ``mp4v`` codec, ``.avi`` with MJPG).
    fps : float or None
        Frame rate of the output: the source video's (None: 25, for frames without a rate).
    """

    def __init__(self, path, fps: float | None = None):
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self._writer = None
        self._zoom = 1
        # an ASCII name with the output's suffix (OpenCV picks the container from it); a directory that is not
        # UTF-8 is reached through opencv_path (OpenCV's binding crashes on such a name)
        # named after this process (writer_tag): one a killed run left (SIGKILL) is removed by the next drawing there
        self._tmp = self.path.with_name(temp_name(DRAW_TEMP, writer_tag(), self.path.suffix))
        self._name = contextlib.ExitStack()

    def _open(self, w: int, h: int) -> None:
        remove_stale_temps(self.path, name=DRAW_TEMP, suffix=self.path.suffix)
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
        name = self._name.enter_context(opencv_path(self._tmp))
        self._writer = cv2.VideoWriter(name, cv2.CAP_FFMPEG, fourcc, self.fps, (w, h))
        if not self._writer.isOpened():
            self.abort()
            raise VideoError(self.path, "cannot open the --draw output for writing; use a .mp4 or .avi name in a "
                                        "writable directory")

    def __call__(self, frame_num: int, gray: np.ndarray, pos: np.ndarray, index: np.ndarray) -> None:
        """Draw tracks ``pos (k, L+1, 2)`` (first ``index[k]+1`` points valid, level-0 pixels) on ``gray``."""
        h, w = gray.shape[:2]
        if self._writer is None:
            self._zoom = max(1, -(-MIN_WIDTH // w))
            self._open(w * self._zoom, h * self._zoom)
        z = self._zoom
        img = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
        if z > 1:
            img = cv2.resize(img, (w * z, h * z), interpolation=cv2.INTER_LINEAR)
        L = pos.shape[1] - 1

        def point(p):  # level-0 pixel centre -> enlarged pixel centre
            return int(round((p[0] + 0.5) * z - 0.5)), int(round((p[1] + 0.5) * z - 0.5))

        for k in range(len(pos)):
            n = int(index[k]) + 1
            pts = pos[k, :n]
            if np.hypot(*(pts[n - 1] - pts[0])) < MIN_EXTENT:
                continue  # has not moved: part of the sampling grid
            for j in range(1, n):
                c = int(255 * (j + 1) / (L + 1))
                cv2.line(img, point(pts[j - 1]), point(pts[j]), (0, c, 0), 1, cv2.LINE_AA)
            cv2.circle(img, point(pts[n - 1]), max(1, z // 2), (0, 0, 255), -1, cv2.LINE_AA)
        cv2.putText(img, str(frame_num), (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        # OpenCV's writer reports a full disk only as a console warning per frame, and leaves a broken file: stop
        # while there is still room for this frame, uncompressed
        if free_bytes(self._tmp.parent) < img.nbytes:
            self.abort()
            raise DiskFullError(self.path)
        self._writer.write(img)

    def close(self) -> None:
        """Finish the video and move it onto ``path`` (nothing is written if no frame was drawn)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            self._name.close()
            os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Stop and remove the partial video; ``path`` is left as it was."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._name.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
