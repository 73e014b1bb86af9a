"""Datasets: the manifest (read/write/validate/probe), dataset readers and the synthetic default dataset."""

from idtfv.data.manifest import (
    Manifest,
    VideoEntry,
    make_video_id,
    probe_manifest,
    read_manifest,
    write_manifest,
)
from idtfv.data.readers import READERS, build_manifest
from idtfv.data.synthetic import CLASSES as SYNTHETIC_CLASSES
from idtfv.data.synthetic import generate_dataset

__all__ = [
    "Manifest",
    "VideoEntry",
    "make_video_id",
    "probe_manifest",
    "read_manifest",
    "write_manifest",
    "build_manifest",
    "READERS",
    "generate_dataset",
    "SYNTHETIC_CLASSES",
]
