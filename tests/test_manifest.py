"""Tests of idtfv.data.manifest: the CSV contract, round trips, validation errors, probing."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from idtfv.data.manifest import (
    Manifest,
    VideoEntry,
    make_video_id,
    manifest_columns,
    probe_manifest,
    read_manifest,
    write_manifest,
)
from idtfv.errors import ManifestError

HEADER = "video_id,path,label,label_name,group,split1,split2,split3,frames,fps,width,height"


def _write(path: Path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_contract_header():
    assert ",".join(manifest_columns(3)) == HEADER
    assert manifest_columns(1)[5:7] == ["split1", "frames"]


def test_read_contract_example(tmp_path):
    (tmp_path / "videos").mkdir()
    csv_path = _write(tmp_path / "m.csv", [
        HEADER,
        "v_a_g01_c01,videos/a.avi,0,walk,g01,train,test,,40,25.0,160,120",
        "v_b_g02_c01,videos/b.avi,1,run,g02,test,train,train,,,,",
        f"abs_c,{tmp_path / 'elsewhere' / 'c.avi'},0,walk,,train,,test,10,12.5,8,6",
    ])
    m = read_manifest(csv_path)
    assert m.root == tmp_path.absolute()
    assert m.class_names == ["walk", "run"]
    assert [e.video_id for e in m.split(1, "train")] == ["v_a_g01_c01", "abs_c"]
    assert [e.video_id for e in m.split(2, "train")] == ["v_b_g02_c01"]
    assert [e.video_id for e in m.split(3, "test")] == ["abs_c"]
    a = m.by_id["v_a_g01_c01"]
    assert a.path == tmp_path.absolute() / "videos" / "a.avi" and a.path.is_absolute()
    assert m.path_of(a) == a.path and m.path_of("abs_c") == tmp_path / "elsewhere" / "c.avi"
    assert (a.label, a.labels, a.group, a.frames, a.fps, a.width, a.height) == (0, (0,), "g01", 40, 25.0, 160, 120)
    b = m.by_id["v_b_g02_c01"]
    assert (b.frames, b.fps, b.width, b.height, b.probed) == (None, None, None, None, False)
    assert m.n_splits == 3 and len(m) == 3


def test_round_trip_is_exact_and_paths_relative(tmp_path):
    root = tmp_path / "data"
    rows = [
        VideoEntry("x1", root / "walk" / "x1.avi", 0, "walk", "actor1", {1: "train", 2: "test"}, 40, 25.0, 160, 120),
        VideoEntry("x2", root / "run" / "x2.avi", 1, "run", "", {1: "test"}),
        VideoEntry("x3", tmp_path / "outside.avi", 1, "run", "a", {2: "train"}, 0, None, None, None),
        VideoEntry("multi", root / "m.avi", 0, "walk;run", "", {1: "train"}, labels=(0, 1)),
    ]
    m = Manifest(rows, root)
    out = write_manifest(m, root / "manifest.csv")
    text = out.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "video_id,path,label,label_name,group,split1,split2,frames,fps,width,height"
    assert lines[1] == "x1,walk/x1.avi,0,walk,actor1,train,test,40,25.0,160,120"
    assert lines[2] == "x2,run/x2.avi,1,run,,test,,,,,"
    assert lines[3].startswith(f"x3,{(tmp_path / 'outside.avi').as_posix()},1,run,a,,train,0,,,")
    assert lines[4] == "multi,m.avi,0;1,walk;run,,train,,,,,"
    back = read_manifest(out)
    assert back.rows == rows
    assert back.class_names == ["walk", "run"]
    # writing what was read gives the same bytes; no temp files are left behind
    write_manifest(back, root / "again.csv")
    assert (root / "again.csv").read_bytes() == out.read_bytes()
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == ["again.csv", "manifest.csv"]
    # moved together with its videos, the manifest still points at them
    assert read_manifest(root / "again.csv").path_of("x1") == root / "walk" / "x1.avi"


def test_class_names_gap_and_explicit(tmp_path):
    m = Manifest([VideoEntry("a", "a.avi", 2, "c", "", {1: "train"})], tmp_path)
    assert m.class_names == ["class0", "class1", "c"]
    m = Manifest([VideoEntry("a", "a.avi", 1, "b", "", {1: "train"})], tmp_path, class_names=["a", "b"])
    assert m.class_names == ["a", "b"]
    with pytest.raises(ManifestError, match="named 'b' in the rows but 'x'"):
        Manifest([VideoEntry("a", "a.avi", 1, "b", "", {1: "train"})], tmp_path, class_names=["a", "x"])


@pytest.mark.parametrize("row,match", [
    ("bad id,a.avi,0,walk,,train,,,,", "video_id must match"),
    ("a/b,a.avi,0,walk,,train,,,,", "video_id must match"),
    ("..,a.avi,0,walk,,train,,,,", "video_id must match"),
    ("a,a.avi,0,walk,,validation,,,,", "split1 must be 'train', 'test' or empty"),
    ("a,a.avi,x,walk,,train,,,,", "column label must be an integer"),
    ("a,a.avi,-1,walk,,train,,,,", "column label must be >= 0"),
    ("a,a.avi,0,walk,,train,-3,,,", "column frames must be >= 0"),
    ("a,a.avi,0,walk,,train,4,abc,,", "column fps must be a number"),
    ("a,a.avi,0,walk,,train,4,0,,", "column fps must be > 0"),
    ("a,,0,walk,,train,,,,", "empty path"),
    ("a,a.avi,0,walk,train,,,,", "9 cells, expected 10"),
    ("a,a.avi,0,,,train,,,,", "empty label_name"),
    ("a,a.avi,0;1,walk,,train,,,,", "2 labels but 1 label names"),
])
def test_bad_rows(tmp_path, row, match):
    path = _write(tmp_path / "m.csv", ["video_id,path,label,label_name,group,split1,frames,fps,width,height",
                                       "ok,ok.avi,0,walk,,test,,,,", row])
    with pytest.raises(ManifestError, match=match) as exc:
        read_manifest(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("rows,match", [
    (["a,a.avi,0,walk,,train,,,,", "a,b.avi,0,walk,,test,,,,"], "duplicate video_id"),
    (["a,a.avi,0,walk,,train,,,,", "b,b.avi,0,run,,test,,,,"], "label 0 is named 'run' here but 'walk'"),
    (["a,a.avi,0,walk,,train,,,,", "b,b.avi,1,walk,,test,,,,"], "label_name 'walk' has id 1 here but 0"),
])
def test_inconsistent_rows(tmp_path, rows, match):
    path = _write(tmp_path / "m.csv", ["video_id,path,label,label_name,group,split1,frames,fps,width,height", *rows])
    with pytest.raises(ManifestError, match=match):
        read_manifest(path)


@pytest.mark.parametrize("header,match", [
    ("video_id,path,label,label_name,group,frames,fps,width,height", "split columns must be split1"),
    ("video_id,path,label,label_name,group,split1,split3,frames,fps,width,height", "without gaps"),
    ("video_id,path,label,group,split1,frames,fps,width,height", "lacks column"),
    ("video_id,path,label,label_name,group,split1,frames,fps,width,height,extra", "unknown column 'extra'"),
    ("video_id,path,path,label,label_name,group,split1,frames,fps,width,height", "appears twice"),
])
def test_bad_headers(tmp_path, header, match):
    path = _write(tmp_path / "m.csv", [header])
    with pytest.raises(ManifestError, match=match):
        read_manifest(path)


def test_missing_empty_and_binary_files(tmp_path):
    with pytest.raises(ManifestError, match="no such manifest"):
        read_manifest(tmp_path / "nope.csv")
    with pytest.raises(ManifestError, match="is not a file"):
        read_manifest(tmp_path)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ManifestError, match="the file is empty"):
        read_manifest(tmp_path / "empty.csv")
    _write(tmp_path / "header.csv", [HEADER])
    with pytest.raises(ManifestError, match="no videos listed"):
        read_manifest(tmp_path / "header.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(tmp_path / "bin.csv")


def test_split_argument_checks(tmp_path):
    m = Manifest([VideoEntry("a", "a.avi", 0, "walk", "", {1: "train"})], tmp_path)
    with pytest.raises(ManifestError, match="'train' or 'test'"):
        m.split(1, "val")
    with pytest.raises(ManifestError, match="split 2 does not exist"):
        m.split(2, "train")


def test_unicode_and_commas_survive(tmp_path):
    rows = [VideoEntry("v1", tmp_path / "vidéos, 1" / "a b.avi", 0, "jump, high", "ß", {1: "test"})]
    write_manifest(Manifest(rows, tmp_path), tmp_path / "m.csv")
    with open(tmp_path / "m.csv", newline="", encoding="utf-8") as f:
        assert list(csv.reader(f))[1][1] == "vidéos, 1/a b.avi"
    assert read_manifest(tmp_path / "m.csv").rows == rows


def test_make_video_id():
    assert make_video_id("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi") == "v_ApplyEyeMakeup_g01_c01"
    assert make_video_id("walk/clip-1.mp4", keep_dirs=True) == "walk__clip-1"
    odd = make_video_id("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0 (1)!.avi")
    assert odd.startswith("April_09_brush_hair_u_nm_np1_ba_goo_0__1__-")
    # sanitising never merges two different names, and is deterministic
    assert make_video_id("a b.avi") != make_video_id("a_b.avi") == "a_b"
    assert make_video_id("a b.avi") == make_video_id("x/a b.avi")
    long_id = make_video_id("x" * 400 + ".avi")
    assert len(long_id) <= 190
    for vid in (odd, long_id, make_video_id("../..avi"), make_video_id("é.avi")):
        Manifest([VideoEntry(vid, "a.avi", 0, "c", "", {1: "train"})])  # passes validation
    with pytest.raises(ManifestError):
        make_video_id("")


def test_probe_manifest_fills_columns_and_reports_failures(tmp_path, tiny_video, caplog):
    good = tiny_video("good.avi", frames=7, fps=10.0)
    (tmp_path / "bad.avi").write_text("not a video")
    m = Manifest([VideoEntry("good", good, 0, "walk", "", {1: "train"}),
                  VideoEntry("bad", tmp_path / "bad.avi", 1, "run", "", {1: "test"}),
                  VideoEntry("gone", tmp_path / "gone.avi", 1, "run", "", {1: "test"})], tmp_path)
    p = probe_manifest(m)
    g = p.by_id["good"]
    assert (g.frames, g.fps, g.width, g.height) == (7, 10.0, 64, 48)
    assert p.by_id["bad"].frames == 0 and p.by_id["gone"].frames == 0
    assert set(p.probe_errors) == {"bad", "gone"} and "no such file" in p.probe_errors["gone"]
    assert m.by_id["good"].frames is None  # the input is not modified
    write_manifest(p, tmp_path / "m.csv")
    assert read_manifest(tmp_path / "m.csv").by_id["good"].frames == 7
    assert probe_manifest(m, jobs=2).rows == p.rows


def test_entries_are_hashable_and_split_takes_numpy_ints(tmp_path):
    import numpy as np

    e = VideoEntry("a", tmp_path / "a.avi", 0, "walk", "", {1: "train"})
    assert len({e, VideoEntry("a", tmp_path / "a.avi", 0, "walk", "", {1: "train"})}) == 1
    m = Manifest([e], tmp_path)
    assert m.split(np.int64(1), "train") == [e]
