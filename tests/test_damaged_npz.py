"""A damaged ``.npz`` given to a reader is one FormatError line naming the file, never a traceback.

Readers: ``load_trajectories`` (trajectories), ``read_features`` (Fisher vectors / feature files),
``load_flow_npz`` (``extract-flow --format npz``), and ``idtfv detect`` reading its features stage. Each damage is
planted at a known place of the ZIP (the first member's data, its central directory entry): a truncated file (not a ZIP), a
``.npy`` under an ``.npz`` name, a reserved DEFLATE block type (``zlib.error``), a flipped byte in a stored member
(its CRC-32 fails) and an unknown compression method in its central directory entry (``NotImplementedError``). The
reference is the file's intact copy, which reads back.
"""

from __future__ import annotations

import struct
import zipfile

import numpy as np
import pytest

from idtfv.errors import FormatError
from test_detect import tiny_detect_inputs  # noqa: F401 - the fixture


DAMAGES = ["truncated", "npy", "bad-deflate-block", "flipped-byte", "unknown-compression"]


def _first_member_data(data: bytes) -> tuple[int, int, zipfile.ZipInfo]:
    """(offset of the local header, offset of the data) of the first member of a ZIP held in ``data``."""
    import io

    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.infolist()[0]
    head = info.header_offset
    name_len, extra_len = struct.unpack_from("<HH", data, head + 26)
    return head, head + 30 + name_len + extra_len, info


def _damage(src, dst, how: str):
    """Write ``dst``: ``src``'s bytes damaged as ``how`` says; return ``dst``."""
    data = bytearray(src.read_bytes())
    head, start, info = _first_member_data(bytes(data))
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "npy":
        buf = __import__("io").BytesIO()
        np.save(buf, np.zeros(3))
        data = bytearray(buf.getvalue())
    elif how == "bad-deflate-block":
        if info.compress_type != zipfile.ZIP_DEFLATED:
            pytest.skip("the first member is stored, not deflated")
        data[start] = 0b111  # BFINAL=1, BTYPE=11: a reserved block type
    elif how == "flipped-byte":
        data[start + info.compress_size // 2] ^= 0x55
    elif how == "unknown-compression":  # the method of the first member in the central directory
        struct.pack_into("<H", data, bytes(data).index(b"PK\x01\x02") + 10, 99)
    dst.write_bytes(bytes(data))
    return dst


def _expect_format_error(read, path):
    with pytest.raises(FormatError) as info:
        read(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message


@pytest.mark.parametrize("how", DAMAGES)
def test_load_trajectories_names_a_damaged_npz(tmp_path, how):
    from idtfv.idt.trajectories import BLOCKS, Trajectories, load_trajectories

    rng = np.random.default_rng(0)
    good = tmp_path / "t.npz"
    Trajectories(**{k: rng.normal(size=(40, w)).astype(np.float32) for k, w in BLOCKS.items()}).save(good)
    assert len(load_trajectories(good)) == 40
    _expect_format_error(load_trajectories, _damage(good, tmp_path / "bad.npz", how))


@pytest.mark.parametrize("how", DAMAGES)
def test_read_features_names_a_damaged_npz(tmp_path, how):
    from idtfv.cache import atomic_savez
    from idtfv.scores import read_features, write_features

    rng = np.random.default_rng(0)
    good = tmp_path / "fv.npz"
    if how == "bad-deflate-block":  # write_features stores; a compressed feature file is read all the same
        atomic_savez(good, {"video_ids": np.array(["a", "b"]), "features": rng.normal(size=(2, 64)).astype(np.float32),
                            "labels": np.array([0, 1])})
    else:
        write_features(good, ["a", "b"], rng.normal(size=(2, 64)), [0, 1])
    assert read_features(good).video_ids == ["a", "b"]
    _expect_format_error(read_features, _damage(good, tmp_path / "bad.npz", how))


@pytest.mark.parametrize("how", DAMAGES)
def test_flow_npz_readers_name_a_damaged_npz(tmp_path, how):
    from idtfv.idt.rawframes import RawframesReader, load_flow_npz, save_flow_npz

    rng = np.random.default_rng(0)
    good = save_flow_npz(tmp_path / "v.npz", rng.normal(size=(3, 16, 16, 2)))
    assert load_flow_npz(good)[0].shape == (3, 16, 16, 2)
    bad = _damage(good, tmp_path / "w.npz", how)
    _expect_format_error(load_flow_npz, bad)
    _expect_format_error(lambda p: RawframesReader(p.parent, "w").flow(), bad)  # what the CNN datasets read


def test_detect_names_a_damaged_features_file(tiny_detect_inputs, capsys):
    """``idtfv detect`` read its features with ``np.load`` and caught only OSError and ValueError: a flipped byte
    was a ``BadZipFile`` traceback."""
    import json

    from idtfv.cache import atomic_savez
    from idtfv.cli import main

    root, argv = tiny_detect_inputs
    (root / "feats").mkdir()
    good = root / "good.npz"
    atomic_savez(good, {"meta": np.zeros((5, 10), np.float32), "hog": np.zeros((5, 6), np.float32)})
    bad = _damage(good, root / "feats" / "u1.npz", "flipped-byte")
    stamp = json.loads((root / "features.json").read_text())
    (root / "features.json").write_text(json.dumps({**stamp, "dir": str(root / "feats"), "done": ["u1"]}))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: ") and len(err.strip().splitlines()) == 1, err
