"""Tests of idtfv.data.readers on small fake dataset trees (empty files) built in tmp_path."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from idtfv.data.manifest import read_manifest, write_manifest
from idtfv.data.readers import READERS, build_manifest
from idtfv.errors import ManifestError, ParameterError

UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]


def _touch(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def _fake_ucf(root: Path, *, list_dir="ucfTrainTestlist", n_splits=3, groups=range(1, 9), clips=2):
    """UCF101 layout: UCF-101/<Class>/v_<Class>_gGG_cCC.avi; split s tests groups in test_groups[s]."""
    lists = root / list_dir if list_dir else root
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(UCF_CLASSES)))
    test_groups = {1: {1, 2}, 2: {3, 4}, 3: {5, 6}}
    rels = []
    for label, cls in enumerate(UCF_CLASSES):
        stem_cls = "HandStandPushups" if cls == "HandstandPushups" else cls  # UCF101's real case quirk
        for g in groups:
            for c in range(1, clips + 1):
                rel = f"{cls}/v_{stem_cls}_g{g:02d}_c{c:02d}.avi"
                _touch(root / "UCF-101" / rel)
                rels.append((rel, label, g))
    for s in range(1, n_splits + 1):
        train = [f"{rel} {label + 1}\n" for rel, label, g in rels if g not in test_groups[s]]
        test = [f"{rel}\n" for rel, label, g in rels if g in test_groups[s]]
        (lists / f"trainlist0{s}.txt").write_text("".join(train))
        (lists / f"testlist0{s}.txt").write_text("".join(test))
    return rels, test_groups


def test_ucf101_reader(tmp_path):
    rels, test_groups = _fake_ucf(tmp_path)
    m = build_manifest("ucf101", tmp_path)
    assert m.class_names == UCF_CLASSES
    assert len(m) == len(rels) == 3 * 8 * 2 and m.n_splits == 3
    by_id = m.by_id
    for rel, label, g in rels:
        e = by_id[Path(rel).stem]
        assert e.label == label and e.label_name == UCF_CLASSES[label]
        assert e.group == f"g{g:02d}"
        assert e.path == tmp_path / "UCF-101" / rel and e.path.exists()
        for s in (1, 2, 3):  # independent truth: the planted test groups
            assert e.splits[s] == ("test" if g in test_groups[s] else "train")
    for s in (1, 2, 3):  # group-disjoint train/test, as UCF101's protocol requires
        train_groups = {e.group for e in m.split(s, "train")}
        assert not train_groups & {e.group for e in m.split(s, "test")}
    # sorted by label then path; deterministic
    assert [e.label for e in m.rows] == sorted(e.label for e in m.rows)
    assert build_manifest("ucf101", tmp_path).rows == m.rows


def test_ucf101_lists_in_root_one_split_and_explicit_dir(tmp_path):
    _fake_ucf(tmp_path / "a", list_dir="", n_splits=1)
    m = build_manifest("ucf101", tmp_path / "a")
    assert m.n_splits == 1 and len(m.split(1, "test")) == 3 * 2 * 2
    _fake_ucf(tmp_path / "b", list_dir="../lists_b")
    m = build_manifest("ucf101", tmp_path / "b", split_file=tmp_path / "lists_b")
    assert m.n_splits == 3


def test_ucf101_errors(tmp_path):
    with pytest.raises(ManifestError, match="cannot find the UCF101 lists"):
        build_manifest("ucf101", tmp_path)
    _fake_ucf(tmp_path)
    lists = tmp_path / "ucfTrainTestlist"
    good = (lists / "trainlist01.txt").read_text()
    (lists / "trainlist01.txt").write_text(good + "YoYo/v_YoYo_g30_c01.avi 1\n")
    with pytest.raises(ManifestError, match=r"trainlist01.txt line \d+: label 1 does not match class 'YoYo'"):
        build_manifest("ucf101", tmp_path)
    (lists / "trainlist01.txt").write_text(good + "Nope/v_Nope_g01_c01.avi 1\n")
    with pytest.raises(ManifestError, match="not '<Class>/<video>' with a class from classInd"):
        build_manifest("ucf101", tmp_path)
    (lists / "trainlist01.txt").write_text(good)
    (lists / "testlist02.txt").unlink()
    with pytest.raises(ManifestError, match="testlist02.txt: missing"):
        build_manifest("ucf101", tmp_path)


def test_ucf101_all_videos_missing_is_an_error(tmp_path):
    _fake_ucf(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "UCF-101")
    with pytest.raises(ManifestError, match="none of the 48 videos"):
        build_manifest("ucf101", tmp_path)


HMDB_CLASSES = ["brush_hair", "cartwheel", "wave"]


def _fake_hmdb(root: Path, list_dir="testTrainMulti_7030_splits"):
    truth = {}
    lists = root / list_dir
    lists.mkdir(parents=True)
    for cls in HMDB_CLASSES:
        names = [f"Film{k}_{cls}_u_nm_np1_fr_med_{j}.avi" for k in range(4) for j in range(2)]
        names.append(f"#20_Rhythm_&_Blues!_{cls}_f_cm_np1_ba_bad_0.avi")  # HMDB51 has such names
        for s in (1, 2, 3):
            lines = []
            for i, name in enumerate(names):
                code = (i + s) % 3
                lines.append(f"{name} {code} \n")
                truth.setdefault((cls, name), {})[s] = {0: "", 1: "train", 2: "test"}[code]
            (lists / f"{cls}_test_split{s}.txt").write_text("".join(lines))
        for name in names:
            _touch(root / cls / name)
    return truth


def test_hmdb51_reader(tmp_path):
    truth = _fake_hmdb(tmp_path)
    m = build_manifest("hmdb51", tmp_path)
    assert m.class_names == HMDB_CLASSES and m.n_splits == 3
    assert len(m) == len(truth)
    found = {(e.label_name, e.path.name): e for e in m.rows}
    for (cls, name), splits in truth.items():
        e = found[(cls, name)]
        assert e.label == HMDB_CLASSES.index(cls) and e.path == tmp_path / cls / name
        assert {s: e.splits.get(s, "") for s in (1, 2, 3)} == splits
        assert e.group == name.split(f"_{cls}_")[0]
    odd = [e for e in m.rows if e.path.name.startswith("#")]
    assert odd and all(e.video_id.startswith("_20_Rhythm___Blues__") for e in odd)
    assert len({e.video_id for e in m.rows}) == len(m)
    # round trip through the CSV
    write_manifest(m, tmp_path / "m.csv")
    assert read_manifest(tmp_path / "m.csv").rows == m.rows


def test_hmdb51_bad_code_and_missing_split(tmp_path):
    _fake_hmdb(tmp_path)
    lists = tmp_path / "testTrainMulti_7030_splits"
    (lists / "wave_test_split2.txt").write_text("x_wave_a.avi 7\n")
    with pytest.raises(ManifestError, match=r"wave_test_split2.txt line 1: expected '<video>.avi 0\|1\|2'"):
        build_manifest("hmdb51", tmp_path)
    (lists / "wave_test_split2.txt").unlink()
    with pytest.raises(ManifestError, match=r"class 'wave' lacks split file\(s\) \[2\]"):
        build_manifest("hmdb51", tmp_path)


def _fake_folder(root: Path, *, actors=6, classes=("box", "clap", "walk")):
    for cls in classes:
        for a in range(actors):
            _touch(root / cls / f"{cls}_g{a:02d}_c01.mp4")
            _touch(root / cls / "sub" / f"{cls}_g{a:02d}_c02.AVI")
    _touch(root / "walk" / "notes.txt")
    _touch(root / ".hidden" / "x.avi")
    (root / "empty_class").mkdir()


def test_folder_group_split(tmp_path):
    _fake_folder(tmp_path)
    m = build_manifest("folder", tmp_path, test_fraction=0.34, random_state=3)
    assert m.class_names == ["box", "clap", "walk"]
    assert len(m) == 3 * 6 * 2
    assert all(e.path.suffix.lower() in (".mp4", ".avi") for e in m.rows)
    assert {e.group for e in m.rows} == {f"g{a:02d}" for a in range(6)}
    part = defaultdict(set)
    for e in m.rows:
        part[e.group].add(e.splits[1])
    assert all(len(p) == 1 for p in part.values())  # a group is never split across train/test
    test_groups = {g for g, p in part.items() if p == {"test"}}
    assert len(test_groups) == 3  # ceil(0.34 * 6) groups
    # seeded: same seed same split, another seed eventually differs
    assert build_manifest("folder", tmp_path, test_fraction=0.34, random_state=3).rows == m.rows
    others = [build_manifest("folder", tmp_path, test_fraction=0.34, random_state=s) for s in range(4, 10)]
    assert any(o.rows != m.rows for o in others)
    m3 = build_manifest("folder", tmp_path, n_splits=3)
    assert m3.n_splits == 3


def test_folder_without_groups_and_custom_regex(tmp_path):
    for cls in ("a", "b"):
        for i in range(5):
            _touch(tmp_path / cls / f"person{i}-take{i % 2}.avi")
    m = build_manifest("folder", tmp_path, test_fraction=0.4)
    assert all(e.group == "" for e in m.rows)
    assert len(m.split(1, "test")) == 4  # 10 singleton groups, 40% test
    m = build_manifest("folder", tmp_path, group_regex=r"person(\d+)")
    assert {e.group for e in m.rows} == {str(i) for i in range(5)}
    with pytest.raises(ParameterError, match="not a valid regular expression"):
        build_manifest("folder", tmp_path, group_regex="(")


def test_folder_split_files(tmp_path):
    _fake_folder(tmp_path, actors=2)
    s1 = tmp_path / "split1.txt"
    s1.write_text("box/box_g00_c01.mp4 train\n./clap/clap_g01_c01.mp4 test\n")
    s2 = tmp_path / "split2.txt"
    s2.write_text("walk/sub/walk_g00_c02.AVI test\n")
    m = build_manifest("folder", tmp_path, split_file=[s1, s2])
    assert [e.video_id for e in m.split(1, "train")] == ["box_g00_c01"]
    assert [e.video_id for e in m.split(1, "test")] == ["clap_g01_c01"]
    assert [e.video_id for e in m.split(2, "test")] == ["walk_g00_c02"]
    assert sum(1 for e in m.rows if not e.splits) == len(m) - 3
    s1.write_text("box/nope.mp4 train\n")
    with pytest.raises(ManifestError, match="'box/nope.mp4' is not a video under the dataset root"):
        build_manifest("folder", tmp_path, split_file=s1)
    s1.write_text("box/box_g00_c01.mp4 validation\n")
    with pytest.raises(ManifestError, match=r"split1.txt line 1: expected '<relative video path> train\|test'"):
        build_manifest("folder", tmp_path, split_file=s1)


def test_folder_duplicate_stems_get_qualified_ids(tmp_path):
    for cls in ("a", "b"):
        _touch(tmp_path / cls / "clip_g01_.avi")
        _touch(tmp_path / cls / "clip_g02_.avi")
    m = build_manifest("folder", tmp_path)
    assert sorted(e.video_id for e in m.rows) == ["a__clip_g01_", "a__clip_g02_", "b__clip_g01_", "b__clip_g02_"]


def test_csv_kind_and_bad_arguments(tmp_path):
    _fake_folder(tmp_path / "d", actors=2)
    m = build_manifest("folder", tmp_path / "d")
    write_manifest(m, tmp_path / "d" / "manifest.csv")
    assert build_manifest("csv", tmp_path / "d").rows == m.rows
    assert build_manifest("csv", tmp_path / "d" / "manifest.csv").rows == m.rows
    assert set(READERS) == {"ucf101", "hmdb51", "folder", "csv"}
    with pytest.raises(ParameterError, match="unknown dataset kind 'kinetics'"):
        build_manifest("kinetics", tmp_path)
    with pytest.raises(ParameterError, match="test_fraction"):
        build_manifest("folder", tmp_path / "d", test_fraction=1.5)
    with pytest.raises(ManifestError, match="no such dataset directory"):
        build_manifest("folder", tmp_path / "nope")
    (tmp_path / "e" / "x").mkdir(parents=True)
    with pytest.raises(ManifestError, match="no videos found"):
        build_manifest("folder", tmp_path / "e")


def test_build_with_probe(tmp_path, tiny_video):
    for cls in ("a", "b"):
        tiny_video(f"ds/{cls}/{cls}_g01_x.avi", frames=4)
        tiny_video(f"ds/{cls}/{cls}_g02_x.avi", frames=5)
    m = build_manifest("folder", tmp_path / "ds", probe=True)
    assert sorted(e.frames for e in m.rows) == [4, 4, 5, 5]
    assert all(e.width == 64 and e.height == 48 for e in m.rows)
