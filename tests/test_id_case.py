"""Video ids at the file system's edge: ids differing only in case, the id rule's one home, the failure count.

Per-video results are files named by the id (``CACHE/<stage>-<hash>/<id>.npz``, rawframes ``DIR/<id>/``). On a
case-insensitive file system (macOS, Windows, FAT/exFAT, SMB) ``v_Walk_g01`` and ``v_walk_g01`` name one file:
the runner refuses such a run there (before writing anything) and runs it as usual on a case-sensitive one. The
machine running these tests has case-sensitive file systems only (Linux), so "case-insensitive" is planted: the
probe is monkeypatched, or the probe's own lookup is shown a planted case-swapped twin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import idtfv.cache
from idtfv.cache import TMP_GLOB, case_insensitive, check_case_twins, load_valid
from idtfv.data.manifest import MAX_VIDEO_ID_LENGTH
from idtfv.errors import ManifestError
from idtfv.runner import run_stage

TWINS = ("v_Walk_g01", "v_walk_g01")


@dataclass(frozen=True)
class Item:
    """A stand-in for idtfv.data.manifest.VideoEntry."""

    video_id: str
    n: int


def expected(n: int) -> dict[str, np.ndarray]:
    """What ``planted`` returns for item ``n`` (different for every n)."""
    rng = np.random.default_rng(500 + n)
    return {"x": rng.standard_normal((10 + n, 4)).astype(np.float32), "n": np.int64(n)}


def planted(entry, params):
    if params.get("log"):
        with open(params["log"], "a") as log:
            log.write(f"{entry.video_id}\n")
    if entry.n in params.get("fail", ()):
        raise ValueError(f"planted failure of {entry.video_id}")
    return expected(entry.n)


@pytest.fixture
def insensitive(monkeypatch):
    """Make every directory look case-insensitive; the list records the directories probed."""
    probed = []

    def probe(directory):
        probed.append(Path(directory))
        return True

    monkeypatch.setattr(idtfv.cache, "case_insensitive", probe)
    return probed


def _written(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix in (".npz", ".source") or p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------------------------ the probe
def test_the_probe_says_case_sensitive_here_and_leaves_nothing_behind(tmp_path):
    (tmp_path / "kept.txt").write_text("x")
    assert case_insensitive(tmp_path) is False  # Linux tmpfs / ext4 / overlayfs
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]


def test_the_probe_says_case_insensitive_when_the_case_swapped_name_answers(tmp_path, monkeypatch):
    # what a case-insensitive file system does: the probe's case-swapped name finds a file. Planted by fixing the
    # probe's random part and creating its case-swapped twin beforehand.
    monkeypatch.setattr(idtfv.cache.secrets, "token_hex", lambda n: "abcdef012345")
    twin = tmp_path / ".cASEpROBE.ABCDEF012345.TMP"
    twin.write_text("")
    assert case_insensitive(tmp_path) is True
    assert [p.name for p in tmp_path.iterdir()] == [twin.name]  # its own probe file is gone
    assert not list(tmp_path.glob(TMP_GLOB))


def test_the_probe_of_a_directory_it_cannot_write_looks_up_the_directory_s_own_name(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(idtfv.cache.os, "open", refuse)
    stage = tmp_path / "Stage-abc"
    stage.mkdir()
    assert case_insensitive(stage) is False  # no 'sTAGE-ABC' beside it
    (tmp_path / "sTAGE-ABC").symlink_to(stage)  # the swapped name reaches the same directory
    assert case_insensitive(stage) is True
    digits = tmp_path / "123"
    digits.mkdir()
    assert case_insensitive(digits) is True  # cannot tell: the safe side


def test_check_case_twins_probes_only_when_there_are_twins_and_names_the_first_pair(tmp_path, insensitive):
    check_case_twins(["a", "b", "A_b", "a_B_"], tmp_path, remedy="r")
    assert insensitive == []  # no twins: no probe
    with pytest.raises(ManifestError) as info:
        check_case_twins(["x", "Ab", "c", "AB", "C", "ab"], tmp_path, remedy="do this")
    message = str(info.value)
    assert insensitive == [tmp_path]  # once
    assert message.startswith("video ids 'Ab' and 'AB' differ only in case (and 2 more such pairs), and ")
    assert str(tmp_path) in message and "case-insensitive" in message and message.endswith(", or do this")
    assert "\n" not in message


# ------------------------------------------------------------------------------------------------ the runner
def test_case_twins_on_a_case_sensitive_file_system_get_a_result_each(tmp_path):
    items = [Item(TWINS[0], 1), Item(TWINS[1], 2)]
    result = run_stage("toy", planted, items, params={}, cache_root=tmp_path)
    assert result.done == list(TWINS) and not result.failed
    for item in items:
        loaded = load_valid(result.path(item.video_id))
        np.testing.assert_array_equal(loaded["x"], expected(item.n)["x"])
        assert int(loaded["n"]) == item.n
    assert not np.array_equal(expected(1)["x"][:11], expected(2)["x"][:11])  # the two results do differ
    assert _written(result.dir) == [f"{TWINS[0]}.npz", f"{TWINS[1]}.npz"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_case_twins_on_a_case_insensitive_file_system_are_refused_before_anything_is_written(tmp_path, insensitive,
                                                                                            jobs):
    log = tmp_path / "log.txt"
    items = [Item("a", 0), Item(TWINS[0], 1), Item("b", 3), Item(TWINS[1], 2)]
    with pytest.raises(ManifestError) as info:
        run_stage("toy", planted, items, params={"log": str(log)}, cache_root=tmp_path / "cache", jobs=jobs)
    message = str(info.value)
    (directory,) = (tmp_path / "cache").iterdir()
    assert insensitive == [directory]
    assert f"'{TWINS[0]}' and '{TWINS[1]}' differ only in case" in message and str(directory) in message
    assert "give one of them another video_id" in message and "--cache DIR" in message and "\n" not in message
    assert not log.exists()  # no video was run
    assert _written(directory) == [] and not (directory / "index.csv").exists()


def test_a_run_without_twins_is_unaffected_on_a_case_insensitive_file_system(tmp_path, insensitive):
    items = [Item("v_Walk_g01", 1), Item("v_Run_g01", 2), Item("v_walk_g02", 3)]
    result = run_stage("toy", planted, items, params={}, cache_root=tmp_path)
    assert result.done == [item.video_id for item in items] and insensitive == []
    for item in items:
        assert int(load_valid(result.path(item.video_id))["n"]) == item.n


def test_idtfv_features_refuses_case_twins_in_one_error_line(tmp_path, tiny_video, insensitive, capsys):
    from idtfv.cli import main

    videos = [tiny_video("Walk.avi", seed=1), tiny_video("walk_2.avi", seed=2)]
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path,label,label_name,group,split1,frames,fps,width,height\n"
                        f"{TWINS[0]},{videos[0]},0,walk,g1,train,,,,\n"
                        f"{TWINS[1]},{videos[1]},0,walk,g2,test,,,,\n")
    status = main(["features", "--manifest", str(manifest), "--cache", str(tmp_path / "cache"),
                   "--out", str(tmp_path / "features.json"), "--preset", "fast"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith(f"error: video ids '{TWINS[0]}' and '{TWINS[1]}' differ only in "
                                                   "case, and ")
    assert "Traceback" not in err and not (tmp_path / "features.json").exists()
    (directory,) = (tmp_path / "cache").iterdir()
    assert str(directory) in err and _written(directory) == []


def test_idtfv_flow_refuses_case_twins_when_the_rawframes_folder_is_case_insensitive(tmp_path, tiny_video,
                                                                                    monkeypatch, capsys):
    from idtfv.cli import main

    out = tmp_path / "rawframes"
    monkeypatch.setattr(idtfv.cache, "case_insensitive", lambda directory: Path(directory) == out)
    videos = [tiny_video("Walk.avi", seed=1), tiny_video("walk_2.avi", seed=2)]
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path,label,label_name,group,split1,frames,fps,width,height\n"
                        f"{TWINS[0]},{videos[0]},0,walk,g1,train,,,,\n"
                        f"{TWINS[1]},{videos[1]},0,walk,g2,test,,,,\n")
    status = main(["flow", "--manifest", str(manifest), "--out", str(out), "--cache", str(tmp_path / "cache"),
                   "--preset", "fast", "--backend", "cpu"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and f"'{TWINS[0]}' and '{TWINS[1]}' differ only in case" in err
    assert str(out) in err and "--out DIR" in err
    assert not out.exists() or [p.name for p in out.iterdir() if p.name != ".lock"] == []
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.npz"))


# ------------------------------------------------------------------------------------------------ the id rule
def test_the_runner_refuses_an_id_over_the_length_bound_in_one_line_and_runs_one_at_it(tmp_path):
    long_id = "v" * (MAX_VIDEO_ID_LENGTH + 1)
    with pytest.raises(ManifestError) as info:
        run_stage("toy", planted, [Item(long_id, 0)], params={}, cache_root=tmp_path)
    message = str(info.value)
    assert "\n" not in message and f"({MAX_VIDEO_ID_LENGTH + 1} characters) is not allowed" in message
    assert f"at most {MAX_VIDEO_ID_LENGTH} characters" in message and "'.' or '..'" in message
    assert long_id not in message  # shortened, not the whole id
    ok_id = "v" * MAX_VIDEO_ID_LENGTH
    result = run_stage("toy", planted, [Item(ok_id, 0)], params={}, cache_root=tmp_path)
    assert result.done == [ok_id] and int(load_valid(result.path(ok_id))["n"]) == 0


@pytest.mark.parametrize("video_id", ["", ".", "..", "a/b", "a b", "é", None, 3, "x" * (MAX_VIDEO_ID_LENGTH + 1)])
def test_the_runner_and_the_manifest_refuse_the_same_ids(tmp_path, video_id):
    from idtfv.data.manifest import is_valid_video_id

    assert not is_valid_video_id(video_id)
    with pytest.raises(ManifestError, match="is not allowed; expected a non-empty id of letters, digits"):
        run_stage("toy", planted, [Item(video_id, 0)], params={}, cache_root=tmp_path)


# ------------------------------------------------------------------------------------------------ the failure count
def test_the_progress_bar_shows_the_number_of_failed_videos_so_far(tmp_path, monkeypatch):
    import tqdm.auto

    shown = []

    class Bar:
        def __init__(self, *args, **kwargs):
            self.n = 0

        def update(self, k):
            self.n += k

        def set_postfix(self, **values):
            shown.append((self.n, values["failed"]))

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    items = [Item(f"v{i}", i) for i in range(7)]
    fail = (1, 2, 5)
    result = run_stage("toy", planted, items, params={"fail": list(fail)}, cache_root=tmp_path, progress=True)
    assert sorted(result.failed) == ["v1", "v2", "v5"]
    # after video k (1-based, entry order: jobs=1), the failures among the first k
    reference = [(k, sum(i in fail for i in range(k))) for k in range(1, 8)]
    assert shown == [(k, n) for k, n in reference if n]
    assert shown[-1] == (7, len(result.failed))
