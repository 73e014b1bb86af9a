"""Datasets: the manifest (read/write/validate/probe), dataset readers and the synthetic default dataset."""

from idt.data.manifest import (
    Manifest,
    VideoEntry,
    make_video_id,
    probe_manifest,
    read_manifest,
    write_manifest,
)
from idt.data.readers import READERS, build_manifest
from idt.data.synthetic import CLASSES as SYNTHETIC_CLASSES
from idt.data.synthetic import generate_dataset

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
