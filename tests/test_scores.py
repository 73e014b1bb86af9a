"""Score and feature file formats: exact round trips, byte determinism, clear errors on malformed files."""

import re

import numpy as np
import pytest

from idtfv.classify import read_features, read_scores, write_features, write_scores
from idtfv.errors import FormatError


def _random_scores(n=7, c=4, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"v_{i:03d}" for i in range(n)]
    s = rng.standard_normal((n, c)) * 10.0 ** rng.integers(-8, 8, size=(n, c))
    names = [f"class{j}" for j in range(c)]
    labels = rng.integers(-1, c, size=n)
    labels[1] = -1  # at least one unknown label
    return ids, s, names, labels


def test_scores_round_trip_is_exact(tmp_path):
    ids, s, names, labels = _random_scores()
    p = write_scores(tmp_path / "s.csv", ids, s, names, labels)
    got = read_scores(p)
    assert got.video_ids == ids
    assert got.class_names == names
    assert got.scores.dtype == np.float64
    np.testing.assert_array_equal(got.scores, s)  # bit-exact
    np.testing.assert_array_equal(got.labels, np.where(labels < 0, -1, labels))
    assert got.labels.dtype == np.int64
    # the documented header and an unknown label written as an empty field
    lines = p.read_text().splitlines()
    assert lines[0] == "video_id,label," + ",".join(names)
    i_unknown = int(np.flatnonzero(labels < 0)[0])
    assert lines[1 + i_unknown].split(",")[1] == ""


def test_scores_are_deterministic_bytes(tmp_path):
    ids, s, names, labels = _random_scores(seed=3)
    a = write_scores(tmp_path / "a.csv", ids, s, names, labels).read_bytes()
    b = write_scores(tmp_path / "b.csv", ids, s.copy(), names, labels).read_bytes()
    assert a == b
    assert not list(tmp_path.glob(".*tmp"))  # no temp files left behind


def test_scores_without_labels_and_multilabel(tmp_path):
    ids, s, names, _ = _random_scores(n=3, c=3)
    got = read_scores(write_scores(tmp_path / "a.csv", ids, s, names))
    np.testing.assert_array_equal(got.labels, [-1, -1, -1])
    assert not got.targets().any()
    sets = [(0, 2), (1,), ()]
    got = read_scores(write_scores(tmp_path / "m.csv", ids, s, names, sets))
    assert got.label_sets == sets and got.multilabel
    np.testing.assert_array_equal(got.labels, [-1, 1, -1])
    np.testing.assert_array_equal(got.targets(), [[1, 0, 1], [0, 1, 0], [0, 0, 0]])
    ind = got.targets()
    got2 = read_scores(write_scores(tmp_path / "m2.csv", ids, s, names, ind))
    assert got2.label_sets == sets


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "empty file"),
        ("id,label,a,b\nv1,0,1,2\n", "header must start"),
        ("video_id,label,a,b\nv1,0,1\n", "line 2: expected 4 fields"),
        ("video_id,label,a,b\nv1,0,1,x\n", "line 2: scores must be numbers"),
        ("video_id,label,a,b\nv1,2,1,2\n", "outside 0..1"),
        ("video_id,label,a,b\nv1,z,1,2\n", "not an integer class id"),
        ("video_id,label,a,b\nv1,0,1,2\nv1,1,1,2\n", "appears twice"),
        ("video_id,label,a,b\nv 1,0,1,2\n", "is not of the form"),
        ("video_id,label,a,b\nv1,0,1,nan\n", "NaN or infinity"),
        ("video_id,label,a,a\nv1,0,1,2\n", "not unique"),
    ],
)
def test_read_scores_errors_name_file_and_problem(tmp_path, text, needle):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(FormatError) as ei:
        read_scores(p)
    msg = str(ei.value)
    assert str(p) in msg and needle in msg and "\n" not in msg


def test_write_scores_rejects_bad_input(tmp_path):
    ids, s, names, labels = _random_scores(n=3, c=2)
    with pytest.raises(ValueError, match="class names"):
        write_scores(tmp_path / "x.csv", ids, s, ["a"], labels)
    with pytest.raises(ValueError, match="unique"):
        write_scores(tmp_path / "x.csv", ["a", "a", "b"], s, names, labels)
    with pytest.raises(ValueError, match="NaN"):
        write_scores(tmp_path / "x.csv", ids, np.full((3, 2), np.nan), names, labels)
    with pytest.raises(ValueError, match="label ids"):
        write_scores(tmp_path / "x.csv", ids, s, names, [0, 5, 1])
    assert not (tmp_path / "x.csv").exists()


def test_features_round_trip_and_determinism(tmp_path):
    rng = np.random.default_rng(1)
    ids = ["a", "b.c", "d-e_f"]
    x = rng.standard_normal((3, 5))
    p = write_features(tmp_path / "f.npz", ids, x, [2, -5, 0])
    got = read_features(p)
    assert got.video_ids == ids
    assert got.features.dtype == np.float32 and got.features.shape == (3, 5)
    np.testing.assert_array_equal(got.features, x.astype(np.float32))
    np.testing.assert_array_equal(got.labels, [2, -1, 0])
    assert got.labels.dtype == np.int64
    with np.load(p, allow_pickle=False) as z:  # plain arrays, no object dtype
        assert set(z.files) == {"video_ids", "features", "labels"}
        assert z["video_ids"].dtype.kind == "U"
    q = write_features(tmp_path / "g.npz", ids, x, [2, -5, 0])
    assert p.read_bytes() == q.read_bytes()
    np.testing.assert_array_equal(read_features(write_features(tmp_path / "h.npz", ids, x)).labels, [-1, -1, -1])


def test_read_features_errors(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"not a zip")
    with pytest.raises(FormatError, match=r"not an .npz \(zip\) archive"):
        read_features(p)
    q = tmp_path / "nokeys.npz"
    np.savez(q, x=np.zeros(3))
    with pytest.raises(FormatError, match="missing array"):
        read_features(q)
    r = tmp_path / "obj.npz"
    np.savez(r, video_ids=np.array(["a", "b"], dtype=object), features=np.zeros((2, 2)))
    with pytest.raises(FormatError, match=str(r.name)):
        read_features(r)
    s = tmp_path / "shape.npz"
    np.savez(s, video_ids=np.array(["a", "b"]), features=np.zeros((3, 2)))
    with pytest.raises(FormatError, match="features must have shape"):
        read_features(s)
    t = tmp_path / "dup.npz"
    np.savez(t, video_ids=np.array(["a", "a"]), features=np.zeros((2, 2)))
    with pytest.raises(FormatError, match="not unique"):
        read_features(t)
    with pytest.raises(OSError):
        read_features(tmp_path / "absent.npz")


def test_read_features_names_a_corrupt_deflate_stream(tmp_path):
    """A compressed member whose DEFLATE data is damaged (zlib.error inside numpy) is one FormatError line."""
    import zipfile

    path = tmp_path / "f.npz"
    np.savez_compressed(path, video_ids=np.array(["a", "b"]), features=np.ones((2, 400), np.float32),
                        labels=np.array([0, 1]))
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("features.npy")
    # the member's data follows its 30-byte local header, file name and extra field
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    raw[start:start + 4] = b"\xff\xff\xff\xff"  # block type 3: "invalid block type"
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="f.npz"):
        read_features(path)



@pytest.mark.parametrize("text, needle", [
    ("video_id,label,a,,c\nv0,0,1,2,3\n", "header column 4 has no class name;"),  # was read as a class named ''
    ("video_id,label,a,b,\nv0,0,1,2,\n", "header column 5 has no class name (a trailing comma?)"),  # was 'scores
    # must be numbers' on line 2
])
def test_read_scores_refuses_an_empty_class_name(tmp_path, text, needle):
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(FormatError, match=re.escape(needle)):
        read_scores(path)
