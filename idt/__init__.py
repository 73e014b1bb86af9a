"""The improved-dense-trajectory extractor (Wang & Schmid, ICCV 2013) and its optical flow (:mod:`idtfv.idt.flow`).

Public API (loaded on first use, so that ``import idtfv.idt`` and the command-line ``--help`` stay fast)::

    from idtfv.idt import IDTParams, extract
    tr = extract("video.avi", params=IDTParams(track_length=15, stride=5))   # Trajectories

Modules: ``params`` (:class:`IDTParams`), ``extractor`` (the per-frame loop), ``trajectories``
(:class:`Trajectories`, ``.npz`` and LEAR text I/O), ``pyramid``, ``sampling``, ``tracking``, ``camera``,
``descriptors``, ``humans`` and ``flow`` (the optical flow solvers, Farnebäck's included); Numba kernels in ``_*_nb``;
``stage`` / ``cli``: ``idtfv features`` and ``extract-trajectories``.
"""

from idtfv.lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
