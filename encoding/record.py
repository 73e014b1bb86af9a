"""Which codebook an encode output was made with: ``<vectors>.json`` beside the ``idtfv encode`` feature file.

``idtfv encode --out DIR/fisher.npz`` also writes ``DIR/fisher.json`` (:func:`write_encode_record`)::

    {"vectors": "fisher.npz", "cache": "<the cache, relative to DIR>", "codebook": "codebook-<hash12>",
     "codebook_sha256": "<content hash of the codebook's files>", "method": "fisher", "pyramid": "1x1x1",
     "split": 1}

``codebook`` is relative to the cache and ``cache`` to the record's directory, so the pair moves with its cache.
:func:`read_encode_record` resolves the codebook directory and checks its content hash, so a consumer of the
vectors (``idtfv detect --vectors``, ``make detect``) uses the codebook of the encode run it follows, never a
guess, and a codebook refitted since then is a clear error. The feature file itself is unchanged (same bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from idtfv.errors import FormatError

__all__ = ["record_path", "codebook_sha256", "write_encode_record", "read_encode_record", "recorded_codebook"]

_KEYS = ("vectors", "cache", "codebook", "codebook_sha256", "method", "pyramid", "split")


def record_path(vectors) -> Path:
    """``DIR/name.json`` for the feature file ``DIR/name.npz``."""
    return Path(vectors).with_suffix(".json")


def codebook_sha256(codebook_dir) -> str:
    """SHA-256 of a codebook directory's content: every ``*.npz`` / ``*.json`` file, by sorted name (name and
    bytes)."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(codebook_dir).iterdir() if p.is_file() and p.suffix in (".npz", ".json"))
    for p in files:
        h.update(p.name.encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def write_encode_record(vectors, codebook_dir, cache, *, method: str, pyramid: str, split: int | None) -> Path:
    """Write the record of the feature file ``vectors`` (encoded with ``codebook_dir``, in ``cache``); return it."""
    from idtfv.atomic import atomic_write_text

    path = record_path(vectors)
    codebook_dir, cache = Path(codebook_dir).resolve(), Path(cache).resolve()
    try:
        codebook = codebook_dir.relative_to(cache).as_posix()
    except ValueError:  # a --codebook outside the cache: relative to the cache all the same
        codebook = Path(os.path.relpath(codebook_dir, cache)).as_posix()
    record = {"vectors": Path(vectors).name, "cache": Path(os.path.relpath(cache, path.parent.resolve())).as_posix(),
              "codebook": codebook, "codebook_sha256": codebook_sha256(codebook_dir), "method": method,
              "pyramid": pyramid, "split": None if split is None else int(split)}
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return path


def read_encode_record(vectors) -> dict:
    """The record of an encode output, with ``codebook_dir`` (resolved path) added.

    ``vectors`` is the feature file (``.npz``) or its record (``.json``). Raises :class:`FormatError` when the
    record is missing or damaged, or when the codebook directory is gone or its content changed since the encode
    run (its SHA-256 differs)."""
    path = record_path(vectors)
    try:
        record = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise FormatError(path, "no encode record (which codebook made these vectors); re-run idtfv encode, which "
                                "writes it beside its --out (with make: remove the .npz, then make encode)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(path, f"not a JSON encode record ({exc}); re-run idtfv encode") from None
    if not isinstance(record, dict) or any(k not in record for k in _KEYS):
        raise FormatError(path, f"expected an encode record with keys {', '.join(_KEYS)}; re-run idtfv encode")
    cb = (path.parent / record["cache"] / record["codebook"]).resolve()
    if not cb.is_dir():
        raise FormatError(path, f"its codebook {cb} is gone; re-run idtfv encode (and the SVM trained on it)")
    digest = codebook_sha256(cb)
    if digest != record["codebook_sha256"]:
        raise FormatError(path, f"codebook {cb} changed since these vectors were encoded (content SHA-256 "
                                f"{digest[:12]}..., recorded {str(record['codebook_sha256'])[:12]}...); re-run idtfv "
                                "encode and train-svm")
    return {**record, "codebook_dir": str(cb)}


def recorded_codebook(vectors) -> tuple[str, str] | None:
    """``(codebook name, content SHA-256)`` as the encode record beside ``vectors`` states them, or None when there
    is no readable record (vectors not made by ``idtfv encode``). Unlike :func:`read_encode_record` it does not
    look at the codebook itself: it says which codebook the vectors were made with, wherever that codebook is now
    (``idtfv train-svm`` stores it with its model; ``idtfv detect`` compares it with the codebook it encodes
    with)."""
    try:
        record = json.loads(record_path(vectors).read_text(encoding="utf-8-sig"))
        name, sha = record["codebook"], record["codebook_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (name, sha) if isinstance(name, str) and isinstance(sha, str) else None
