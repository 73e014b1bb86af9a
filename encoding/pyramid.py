"""Spatio-temporal pyramids: which cells of ``nx x ny x nt`` grids each trajectory falls in.

A trajectory's position is its normalised ``x_pos, y_pos, t_pos`` in [0, 1) (meta columns 7, 8, 9 of the
extractor, LEAR order). In a grid ``nx x ny x nt`` its cell is (ix, iy, it) = floor(pos * n) (clipped to n - 1),
numbered ``(it * ny + iy) * nx + ix``. Several grids, e.g. ``"1x1x1,1x3x1,1x1x2"`` (whole video, three horizontal
stripes, two temporal halves; Laptev et al. 2008, Wang & Schmid 2013), are numbered one after the other, so a
pyramid has ``sum(nx * ny * nt)`` cells and every trajectory belongs to exactly one cell of each grid.
"""

from __future__ import annotations

import re

import numpy as np

from idtfv.errors import ParameterError

__all__ = ["parse_pyramid", "n_cells", "cell_ids", "POSITION_COLUMNS"]

#: meta columns holding x_pos, y_pos, t_pos.
POSITION_COLUMNS = (7, 8, 9)
_GRID_RE = re.compile(r"(\d+)x(\d+)x(\d+)")


def parse_pyramid(spec: str | list | tuple) -> tuple[tuple[int, int, int], ...]:
    """``"1x1x1,1x3x1,1x1x2"`` -> ``((1, 1, 1), (1, 3, 1), (1, 1, 2))`` (nx, ny, nt per grid)."""
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        grids = []
        for p in parts:
            m = _GRID_RE.fullmatch(p)
            if not m:
                raise ParameterError(f"pyramid grid {p!r} is not of the form NXxNYxNT (e.g. '1x3x1'); "
                                     f"got pyramid {spec!r}")
            grids.append(tuple(int(v) for v in m.groups()))
    else:
        grids = [tuple(int(v) for v in g) for g in spec]
    if not grids or any(len(g) != 3 or min(g) < 1 for g in grids):
        raise ParameterError(f"pyramid must list grids NXxNYxNT with positive sizes, e.g. '1x1x1,1x3x1'; got {spec!r}")
    return tuple(grids)


def n_cells(grids) -> int:
    """Total number of cells of the pyramid."""
    return int(sum(nx * ny * nt for nx, ny, nt in grids))


def cell_ids(positions, grids) -> np.ndarray:
    """Cell of every trajectory in every grid.

    Parameters
    ----------
    positions : (N, 3) array of x_pos, y_pos, t_pos in [0, 1) (values outside are clipped into the edge cells).
    grids : output of :func:`parse_pyramid`.

    Returns
    -------
    (N, G) int64 global cell ids (grid g's cells start at the sum of the earlier grids' sizes).
    """
    P = np.asarray(positions, np.float64)
    if P.ndim != 2 or P.shape[1] != 3:
        raise ParameterError(f"positions must be (N, 3) x_pos, y_pos, t_pos; got shape {P.shape}")
    out = np.empty((P.shape[0], len(grids)), np.int64)
    offset = 0
    for g, (nx, ny, nt) in enumerate(grids):
        ix = np.clip(np.floor(P[:, 0] * nx), 0, nx - 1).astype(np.int64)
        iy = np.clip(np.floor(P[:, 1] * ny), 0, ny - 1).astype(np.int64)
        it = np.clip(np.floor(P[:, 2] * nt), 0, nt - 1).astype(np.int64)
        out[:, g] = offset + (it * ny + iy) * nx + ix
        offset += nx * ny * nt
    return out
