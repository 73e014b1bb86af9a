"""The descriptor layout: how wide each block of a trajectory row is, derived from the extractor's options.

One row per trajectory, blocks in LEAR's column order (:data:`BLOCK_NAMES`):

====== =================================== ==========================================
block  width                               reference options (L = 15, 2x2x3 cells)
====== =================================== ==========================================
meta   10                                  10
traj   2 L                                 30
hog    8 bins x n_xy^2 x n_t               96
hof    9 bins (8 + zero motion) x ...      108
mbhx   8 bins x n_xy^2 x n_t               96
mbhy   8 bins x n_xy^2 x n_t               96
====== =================================== ==========================================

with :math:`L` = ``track_length``, :math:`n_{xy}` = ``nxy_cells`` and :math:`n_t` = ``nt_cells`` of
:class:`~idtfv.idt.params.IDTParams` (the bins are the extractor's, :mod:`idtfv.idt.descriptors`). This module is
the one place that states these widths: the :class:`~idtfv.idt.trajectories.Trajectories` container and its LEAR
text reader and writer, and the encoding stage (which reads the layout of a features file from the parameters
recorded with it), all take them from a :class:`DescriptorLayout`.

Light on purpose (standard library only): the command-line shells may import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from idtfv.errors import ParameterError

__all__ = ["DescriptorLayout", "BLOCK_NAMES", "CHANNELS", "META_WIDTH", "HOG_BINS", "HOF_BINS", "MBH_BINS"]

#: The descriptor channels, in LEAR's column order.
CHANNELS = ("traj", "hog", "hof", "mbhx", "mbhy")
#: Every block of a row: ``meta`` then the channels.
BLOCK_NAMES = ("meta", *CHANNELS)
#: Columns of ``meta``: frame_num, mean_x, mean_y, var_x, var_y, length, scale, x_pos, y_pos, t_pos.
META_WIDTH = 10
#: Orientation bins per cell: HOG and each MBH component 8; HOF 8 orientations plus the zero-motion bin.
HOG_BINS, HOF_BINS, MBH_BINS = 8, 9, 8
#: IDTParams fields a layout depends on.
_PARAMS = ("track_length", "nxy_cells", "nt_cells")


@dataclass(frozen=True)
class DescriptorLayout:
    """Widths of the blocks of a trajectory row, for one setting of the extractor's options.

    Parameters
    ----------
    track_length : int
        :math:`L` (``IDTParams.track_length``): the ``traj`` block holds ``2 L`` numbers.
    nxy_cells, nt_cells : int
        :math:`n_{xy}`, :math:`n_t` (``IDTParams.nxy_cells``, ``nt_cells``): each of HOG, HOF, MBHx and MBHy has
        ``n_xy^2 n_t`` cells of its bins.

    The defaults are the reference options' (a 436-column row). Build one with :meth:`from_params` (an
    ``IDTParams`` or its ``to_dict()``) or :meth:`from_info` (a trajectories file's ``info``).
    """

    track_length: int = 15
    nxy_cells: int = 2
    nt_cells: int = 3

    #: The descriptor channels (``.npz`` keys), in LEAR's column order.
    CHANNELS: ClassVar[tuple[str, ...]] = CHANNELS
    #: Every block (``meta`` first).
    BLOCK_NAMES: ClassVar[tuple[str, ...]] = BLOCK_NAMES

    def __post_init__(self):
        for name in _PARAMS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"DescriptorLayout.{name}: expected an integer >= 1, got {value!r}; it comes "
                                     f"from the extractor option {name} (IDTParams)")

    # ------------------------------------------------------------------ widths
    @property
    def cells(self) -> int:
        """Cells of one descriptor tube, :math:`n_{xy}^2 n_t`."""
        return self.nxy_cells * self.nxy_cells * self.nt_cells

    @property
    def widths(self) -> dict[str, int]:
        """``{block: width}`` of every block, ``meta`` first, in LEAR's column order (a new dict)."""
        return {"meta": META_WIDTH, **self.channel_widths}

    @property
    def channel_widths(self) -> dict[str, int]:
        """``{channel: width}`` of the descriptor channels (``traj``, ``hog``, ``hof``, ``mbhx``, ``mbhy``)."""
        c = self.cells
        return {"traj": 2 * self.track_length, "hog": HOG_BINS * c, "hof": HOF_BINS * c, "mbhx": MBH_BINS * c,
                "mbhy": MBH_BINS * c}

    @property
    def n_columns(self) -> int:
        """Columns of a whole row (a LEAR text line): 436 for the reference options."""
        return sum(self.widths.values())

    def describe(self) -> str:
        """Short text for messages, e.g. ``"track length 15, 2x2x3 cells"``."""
        n = self.nxy_cells
        return f"track length {self.track_length}, {n}x{n}x{self.nt_cells} cells"

    # ------------------------------------------------------------------ construction
    def to_dict(self) -> dict:
        """``{"track_length", "nxy_cells", "nt_cells"}`` (JSON-safe)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_params(cls, params) -> "DescriptorLayout":
        """The layout of the extractor's output for ``params``.

        Parameters
        ----------
        params : IDTParams or mapping
            The options, or their ``IDTParams.to_dict()`` (as recorded in a features stage stamp's
            ``params["idt"]`` and in a trajectories file's ``info["params"]``); options it does not name take
            IDTParams' defaults.
        """
        if isinstance(params, Mapping):
            from idtfv.idt.params import IDTParams

            defaults = {f.name: f.default for f in dataclasses.fields(IDTParams)}
            return cls(**{name: params.get(name, defaults[name]) for name in _PARAMS})
        missing = [name for name in _PARAMS if not hasattr(params, name)]
        if missing:
            raise ParameterError(f"DescriptorLayout.from_params: expected an IDTParams or a dict of its options, "
                                 f"got {type(params).__name__}")
        return cls(**{name: getattr(params, name) for name in _PARAMS})

    @classmethod
    def from_info(cls, info: Mapping | None) -> "DescriptorLayout":
        """The layout recorded in a trajectories file's ``info`` (its ``info_json``).

        ``info["params"]`` (the extractor's options, written by :func:`idtfv.idt.extract`) decides; ``info``
        without ``params`` (LEAR's text files, hand-made arrays) has the reference layout.
        """
        params = (info or {}).get("params")
        if params is None:
            return cls()
        if not isinstance(params, Mapping):
            raise ParameterError(f"info['params'] must be a dict of extractor options (IDTParams.to_dict()), "
                                 f"got {type(params).__name__}")
        return cls.from_params(params)
