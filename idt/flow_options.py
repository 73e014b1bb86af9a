"""The options of ``extract-flow`` and ``idtfv flow``: one frozen, validated :class:`FlowOptions`.

Its fields are the keyword arguments of :func:`idtfv.idt.stage.extract_video`; both commands generate their flow
options from them (:mod:`idtfv.options`). :meth:`FlowOptions.to_dict` is the ``idtfv flow`` stage's parameter dict
(the cache key content).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

from idtfv.idt.flow import BACKENDS
from idtfv.idt.params import FLOW_METHODS
from idtfv.idt.rawframes import DEFAULT_BOUND, DEFAULT_QUALITY
from idtfv.idt.stage import FLOW_PRESETS
from idtfv.options import choices_of, field_error, option

__all__ = ["FlowOptions", "FLOW_FORMATS"]

#: Output forms: ``jpg`` (a rawframes directory per video) or ``npz`` (one lossless float16 file per video).
FLOW_FORMATS = ("jpg", "npz")


@dataclass(frozen=True)
class FlowOptions:
    """Options of :func:`idtfv.idt.stage.extract_video` (frozen; validated on construction).

    Parameters
    ----------
    method : {"tvl1", "farneback", "dis"}
        The flow solver (:func:`idtfv.idt.flow.estimate_flow`).
    preset : {"default", "fast"}
        The solver's parameters (:func:`idtfv.idt.stage.flow_params`).
    bound : float
        Flow is clipped to +-``bound`` px before it is mapped to 0..255 (rawframes); also stored in the ``.npz``.
    resize_width : int or None
        Shrink frames wider than this to this width, keeping the aspect ratio.
    warped : bool
        TSN's camera-compensated "warped" flow (:func:`idtfv.idt.camera.camera_compensated_frame`).
    fmt : {"jpg", "npz"}
        Rawframes directory or one float16 ``.npz`` per video.
    backend : {"auto", "cpu", "gpu"}
        Where TV-L1 runs.
    quality : int
        JPEG quality, 1..100.
    seed : int
        Seed of the homography's RANSAC (``warped``).
    """

    method: str = option("tvl1", "flow method", choices=FLOW_METHODS)
    preset: str = option("default", "solver parameters: default = OpenCV DualTVL1's; fast = TVL1Params.fast() "
                                    "(about 7x cheaper), DIS 'fast'", choices=FLOW_PRESETS)
    bound: float = option(DEFAULT_BOUND, "clip flow to +-BOUND px before mapping it to 0..255", metavar="BOUND")
    resize_width: int | None = option(None, "shrink frames wider than W to width W, keeping the aspect ratio",
                                      metavar="W", none="keep the size")
    warped: bool = option(False, "camera-compensated (TSN 'warped') flow through the extractor's homography")
    fmt: str = option("jpg", "jpg = rawframes directory; npz = lossless DIR/<video_id>.npz, float16",
                      flag="--format", choices=FLOW_FORMATS)
    backend: str = option("auto", "where TV-L1 runs (gpu falls back to the CPU with a warning)", choices=BACKENDS)
    quality: int = option(DEFAULT_QUALITY, "JPEG quality, 1..100", metavar="Q")
    seed: int = option(0, "random seed of the homography's RANSAC (--warped)", metavar="SEED")

    def __post_init__(self):
        def bad(name, expected):
            raise field_error("FlowOptions", name, expected, getattr(self, name), _DEFAULTS[name])

        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                bad(name, "one of " + ", ".join(allowed))
        bound = self.bound
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound) or bound <= 0:
            bad("bound", "a finite number > 0 px")
        if self.resize_width is not None and (
            isinstance(self.resize_width, bool) or not isinstance(self.resize_width, int) or self.resize_width < 1
        ):
            bad("resize_width", "None or a positive integer")
        if not isinstance(self.warped, bool):
            bad("warped", "True or False")
        if isinstance(self.quality, bool) or not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            bad("quality", "an integer in 1..100")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            bad("seed", "an integer >= 0")

    def replace(self, **changes) -> FlowOptions:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The options as :func:`~idtfv.idt.stage.extract_video`'s keyword arguments (JSON-safe, field order)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["bound"] = float(d["bound"])
        return d


_DEFAULTS = {f.name: f.default for f in fields(FlowOptions)}
_CHOICES = choices_of(FlowOptions)
