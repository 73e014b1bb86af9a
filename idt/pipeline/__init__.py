"""The pipeline plumbing: stage cache, resumable joblib/Dask stage runner and the ``idtfv`` command.

See :mod:`idt.pipeline.cache`, :mod:`idt.pipeline.runner` and :mod:`idt.pipeline.cli`.
"""

from idt.pipeline.cache import atomic_savez, atomic_write_json, atomic_write_text, load_valid, param_hash, stage_dir
from idt.pipeline.runner import StageResult, read_index, read_stamp, run_stage, write_stamp

__all__ = [
    "StageResult",
    "atomic_savez",
    "atomic_write_json",
    "atomic_write_text",
    "load_valid",
    "param_hash",
    "read_index",
    "read_stamp",
    "run_stage",
    "stage_dir",
    "write_stamp",
]
