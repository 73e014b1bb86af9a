"""The improved-dense-trajectory extractor (Wang & Schmid, ICCV 2013) and its optical flow (:mod:`idtfv.idt.flow`).

Public API (loaded on first use, so that ``import idtfv.idt`` and the command-line ``--help`` stay fast)::

    from idtfv.idt import IDTParams, extract
    tr = extract("video.avi", params=IDTParams(track_length=15, stride=5))   # Trajectories

Modules: ``params`` (:class:`IDTParams`), ``extractor`` (the per-frame loop), ``trajectories``
(:class:`Trajectories`, ``.npz`` and LEAR text I/O), ``pyramid``, ``sampling``, ``tracking``, ``camera``,
``descriptors``, ``humans`` and ``flow`` (the optical flow solvers, Farnebäck's included); Numba kernels in ``_*_nb``;
``stage`` / ``cli``: ``idtfv features`` and ``extract-trajectories``.
"""

import importlib

__all__ = ["extract", "extract_to_file", "iter_trajectories", "IDTParams", "Trajectories", "TrajectoryWriter",
           "load_trajectories", "concatenate", "DescriptorLayout"]
_HOMES = {"extract": "extractor", "extract_to_file": "extractor", "iter_trajectories": "extractor",
          "IDTParams": "params", "Trajectories": "trajectories", "TrajectoryWriter": "trajectories",
          "load_trajectories": "trajectories", "concatenate": "trajectories"}
# the widths of a trajectory row's blocks for given extractor options (idtfv.encoding reads features with it)
_HOMES["DescriptorLayout"] = "layout"
# TSN's warped flow (one definition, also extract-flow --warped's) and the rawframes codec/reader, for idtfv.deep
_HOMES.update({"warped_flow": "camera", "camera_compensated_frame": "camera", "RawframesReader": "rawframes",
               "quantize_flow": "rawframes", "dequantize_flow": "rawframes", "DEFAULT_BOUND": "rawframes"})


def __getattr__(name):
    if name in _HOMES:
        value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
