"""Tests of idtfv.runner: resume, force, failure isolation, joblib/Dask equality, SIGKILL safety."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from idtfv.errors import FormatError, IdtfvError, ManifestError, ParameterError, VideoError
from idtfv.cache import TMP_GLOB, atomic_savez, atomic_write_text, load_valid, stage_dir
from idtfv.runner import StageResult, read_index, read_stamp, run_stage, write_stamp

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Item:
    """A stand-in for idtfv.data.manifest.VideoEntry."""

    video_id: str
    n: int


def expected(n: int, scale: float) -> dict[str, np.ndarray]:
    """The naive reference of what ``make_arrays`` must produce for item ``n``."""
    rng = np.random.default_rng(1000 + n)
    x = (rng.standard_normal((50 + n, 8)) * scale).astype(np.float32)
    return {"x": x, "count": np.int64(n), "info_json": np.array(json.dumps({"n": n}))}


def make_arrays(entry, params):
    if params.get("log"):
        with open(params["log"], "a") as log:
            log.write(f"{entry.video_id}\n")
    if entry.n in params.get("idtfv_error", ()):
        raise VideoError(f"/videos/{entry.video_id}.avi", "no decodable frames; re-encode the file")
    if entry.n in params.get("value_error", ()):
        raise ValueError("bad value\nsecond line")
    if entry.n in params.get("bad_return", ()):
        return [1, 2, 3]
    return expected(entry.n, params["scale"])


def _items(k=6):
    return [Item(f"vid_{i:02d}", i) for i in range(k)]


def _log_lines(path):
    return Path(path).read_text().split() if Path(path).exists() else []


def _index_rows(result):
    with open(result.dir / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def _check_outputs(result, items, scale=1.0):
    for item in items:
        loaded = load_valid(result.path(item.video_id))
        assert loaded is not None, item.video_id
        ref = expected(item.n, scale)
        assert sorted(loaded) == sorted(ref)
        for key in ref:
            np.testing.assert_array_equal(loaded[key], ref[key])


def _npz_bytes(directory):
    return {p.name: p.read_bytes() for p in sorted(Path(directory).glob("*.npz"))}


# ------------------------------------------------------------------------------------------------ serial core
def test_serial_run_writes_one_valid_npz_per_video_and_an_index(tmp_path):
    items = _items()
    result = run_stage("toy", make_arrays, items, params={"scale": 2.0}, cache_root=tmp_path)
    assert isinstance(result, StageResult)
    assert result.dir == stage_dir(tmp_path, "toy", {"scale": 2.0}, create=False)
    assert result.done == [i.video_id for i in items] and result.skipped == [] and result.failed == {}
    assert result.ok == result.done
    _check_outputs(result, items, scale=2.0)
    rows = _index_rows(result)
    assert [r["video_id"] for r in rows] == sorted(i.video_id for i in items)
    assert {r["status"] for r in rows} == {"done"} and all(float(r["seconds"]) >= 0 for r in rows)
    assert json.loads((result.dir / "params.json").read_text())["params"] == {"scale": 2.0}
    assert sorted(p.name for p in result.dir.iterdir()) == sorted(
        [f"{i.video_id}.npz" for i in items] + [".lock", "index.csv", "params.json"]
    )


def test_resume_skips_valid_outputs_and_redoes_deleted_or_corrupt_ones(tmp_path):
    items = _items(6)
    log = tmp_path / "calls.log"
    params = {"scale": 1.0, "log": str(log)}
    first = run_stage("toy", make_arrays, items, params=params, cache_root=tmp_path / "c")
    assert len(_log_lines(log)) == 6

    second = run_stage("toy", make_arrays, items, params=params, cache_root=tmp_path / "c")
    assert second.done == [] and second.skipped == [i.video_id for i in items]
    assert len(_log_lines(log)) == 6  # nothing recomputed

    first.path("vid_01").unlink()
    data = first.path("vid_03").read_bytes()
    first.path("vid_03").write_bytes(data[: len(data) // 2])  # truncated
    flipped = bytearray(first.path("vid_04").read_bytes())
    flipped[len(flipped) // 3] ^= 0x55  # corrupted in the middle of the compressed data
    first.path("vid_04").write_bytes(bytes(flipped))
    (first.dir / ".vid_05.npz.zz9.tmp").write_bytes(b"left by a killed run")

    third = run_stage("toy", make_arrays, items, params=params, cache_root=tmp_path / "c")
    assert third.done == ["vid_01", "vid_03", "vid_04"]
    assert third.skipped == ["vid_00", "vid_02", "vid_05"]
    assert _log_lines(log)[6:] == ["vid_01", "vid_03", "vid_04"]
    assert list(third.dir.glob(TMP_GLOB)) == []
    _check_outputs(third, items)


def test_force_recomputes_everything(tmp_path):
    items = _items(3)
    log = tmp_path / "calls.log"
    params = {"scale": 1.0, "log": str(log)}
    run_stage("toy", make_arrays, items, params=params, cache_root=tmp_path)
    forced = run_stage("toy", make_arrays, items, params=params, cache_root=tmp_path, force=True)
    assert forced.done == [i.video_id for i in items] and forced.skipped == []
    assert _log_lines(log) == [i.video_id for i in items] * 2
    _check_outputs(forced, items)


def test_a_relative_cache_root_gives_an_absolute_stage_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # workers elsewhere (Dask) must get a path that does not depend on the cwd
    result = run_stage("toy", make_arrays, _items(1), params={"scale": 1.0}, cache_root="rel/cache")
    assert result.dir.is_absolute() and result.dir.parent == tmp_path / "rel" / "cache"
    _check_outputs(result, _items(1))


def test_different_params_use_a_different_directory(tmp_path):
    items = _items(2)
    a = run_stage("toy", make_arrays, items, params={"scale": 1.0}, cache_root=tmp_path)
    b = run_stage("toy", make_arrays, items, params={"scale": 3.0}, cache_root=tmp_path)
    assert a.dir != b.dir and b.done == ["vid_00", "vid_01"]
    _check_outputs(a, items, 1.0)
    _check_outputs(b, items, 3.0)


def test_failures_are_isolated_recorded_and_retried(tmp_path):
    items = _items(6)
    params = {"scale": 1.0, "idtfv_error": [1], "value_error": [3], "bad_return": [4]}
    result = run_stage("toy", make_arrays, items, params=params, cache_root=tmp_path)
    assert result.done == ["vid_00", "vid_02", "vid_05"]
    assert result.failed == {
        "vid_01": "/videos/vid_01.avi: no decodable frames; re-encode the file",
        "vid_03": "ValueError: bad value second line",
        "vid_04": "TypeError: stage function 'make_arrays' returned list; expected a dict of name -> numpy array",
    }
    assert result.ok == ["vid_00", "vid_02", "vid_05"]
    _check_outputs(result, [items[0], items[2], items[5]])
    for vid in result.failed:
        assert not result.path(vid).exists()
    rows = {r["video_id"]: r for r in _index_rows(result)}
    assert {vid: (r["status"], r["error"]) for vid, r in rows.items() if r["status"] == "failed"} == {
        vid: ("failed", msg) for vid, msg in result.failed.items()
    }
    assert read_index(result.dir / "index.csv")["vid_03"].error == "ValueError: bad value second line"

    again = run_stage("toy", make_arrays, items, params=params, cache_root=tmp_path)
    assert again.skipped == result.done and again.failed == result.failed and again.done == []


def test_a_stale_output_is_removed_when_a_forced_rerun_fails(tmp_path):
    items = [Item("vid_07", 7)]
    ok = run_stage("toy", make_arrays, items, params={"scale": 1.0}, cache_root=tmp_path)
    assert ok.path("vid_07").exists()
    # same directory (same params), but the function now fails for this video
    bad = run_stage("toy", _fail_all, items, params={"scale": 1.0}, cache_root=tmp_path, force=True)
    assert bad.dir == ok.dir and bad.failed == {"vid_07": "RuntimeError: always fails"}
    assert not bad.path("vid_07").exists()


def _fail_all(entry, params):
    raise RuntimeError("always fails")


def test_index_keeps_rows_of_videos_from_earlier_runs(tmp_path):
    run_stage("toy", make_arrays, _items(3), params={"scale": 1.0}, cache_root=tmp_path)
    result = run_stage("toy", make_arrays, [Item("extra", 9)], params={"scale": 1.0}, cache_root=tmp_path)
    assert [r["video_id"] for r in _index_rows(result)] == ["extra", "vid_00", "vid_01", "vid_02"]
    # a lost index is rebuilt from the valid outputs
    (result.dir / "index.csv").unlink()
    rebuilt = run_stage("toy", make_arrays, _items(3), params={"scale": 1.0}, cache_root=tmp_path)
    assert rebuilt.skipped == ["vid_00", "vid_01", "vid_02"]
    assert {r["video_id"]: r["status"] for r in _index_rows(rebuilt)} == dict.fromkeys(rebuilt.skipped, "done")


@pytest.mark.parametrize(
    "items, error",
    [
        ([Item("a", 0), Item("a", 1)], "appears twice"),
        ([Item("a/b", 0)], "not allowed"),
        ([Item("", 0)], "not allowed"),
        ([Item("..", 0)], "not allowed"),
    ],
)
def test_bad_video_ids_are_refused_before_any_work(tmp_path, items, error):
    with pytest.raises(ManifestError, match=error):
        run_stage("toy", make_arrays, items, params={"scale": 1.0}, cache_root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_second_run_on_a_busy_stage_directory_is_refused(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    params = {"scale": 1.0}
    directory = stage_dir(tmp_path, "toy", params)
    with open(directory / ".lock", "w") as held:  # another process holds the directory
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(IdtfvError, match="another 'toy' run is using this directory"):
            run_stage("toy", make_arrays, _items(2), params=params, cache_root=tmp_path)
        assert not list(directory.glob("*.npz"))
    result = run_stage("toy", make_arrays, _items(2), params=params, cache_root=tmp_path)  # released: fine
    assert result.done == ["vid_00", "vid_01"]


@pytest.mark.parametrize("jobs", [0, -2, 1.5, True])
def test_bad_jobs_are_refused(tmp_path, jobs):
    with pytest.raises(ParameterError, match="jobs"):
        run_stage("toy", make_arrays, _items(1), params={"scale": 1.0}, cache_root=tmp_path, jobs=jobs)


@pytest.mark.parametrize("cpus, jobs, tasks, workers, warned", [
    (2, 100000, 96, 2, True),   # --jobs 100000 started that many processes
    (8, 100000, 96, 8, True),
    (8, 4, 96, 4, False),
    (8, -1, 96, 8, False),      # -1: one per usable CPU
    (8, -1, 3, 3, False),       # never more than the tasks
    (8, 6, 3, 3, False),
    (1, 2, 10, 2, False),       # 2 stay 2 on one CPU: separate processes also isolate a crashing video
    (1, 3, 10, 2, True),
    (1, -1, 10, 1, False),
])
def test_local_workers_are_at_most_one_per_cpu_and_task(monkeypatch, cpus, jobs, tasks, workers, warned):
    import warnings

    from idtfv import options

    monkeypatch.setattr(options, "usable_cpus", lambda: cpus)  # a planted machine size
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert options.local_workers(jobs, tasks) == workers
    said = [w for w in caught if issubclass(w.category, options.JobsCappedWarning)]
    assert len(said) == int(warned)
    if warned:
        assert f"jobs={jobs} is more than the {cpus} CPU(s)" in str(said[0].message)
    with pytest.raises(ParameterError, match="jobs"):
        options.local_workers(0, tasks)


def test_the_stage_runs_on_at_most_one_worker_per_cpu(tmp_path, monkeypatch):
    """``run_stage(jobs=100000)`` starts one loky worker per usable CPU (at least 2), not 100000, says so in a
    warning, and writes the serial run's bytes."""
    from idtfv import options

    seen = []
    import joblib

    real = joblib.Parallel.__init__

    def parallel(self, *args, n_jobs=None, **kwargs):
        seen.append(n_jobs)
        real(self, *args, n_jobs=n_jobs, **kwargs)

    monkeypatch.setattr(joblib.Parallel, "__init__", parallel)
    items = _items(4)
    with pytest.warns(options.JobsCappedWarning, match="jobs=100000 is more than"):
        many = run_stage("toy", make_arrays, items, params={"scale": 1.0}, cache_root=tmp_path / "many", jobs=100000)
    assert seen == [max(2, min(options.usable_cpus(), 4))]
    serial = run_stage("toy", make_arrays, items, params={"scale": 1.0}, cache_root=tmp_path / "serial")
    assert _npz_bytes(many.dir) == _npz_bytes(serial.dir) and many.done == serial.done


def test_compresslevel_changes_bytes_but_not_values_or_directory(tmp_path):
    items = _items(2)
    fast = run_stage("toy", make_arrays, items, params={"scale": 1.0}, cache_root=tmp_path / "a")
    numpy_level = run_stage("toy", make_arrays, items, params={"scale": 1.0}, cache_root=tmp_path / "b",
                            compresslevel=None)
    assert fast.dir.name == numpy_level.dir.name
    _check_outputs(numpy_level, items)
    reference = tmp_path / "ref.npz"
    atomic_savez(reference, expected(0, 1.0))  # zlib's default level, as np.savez_compressed
    assert numpy_level.path("vid_00").read_bytes() == reference.read_bytes()
    assert fast.path("vid_00").read_bytes() != reference.read_bytes()
    with pytest.raises(ParameterError, match="compresslevel"):
        run_stage("toy", make_arrays, items, params={"scale": 1.0}, cache_root=tmp_path, compresslevel=12)


def test_empty_entry_list_gives_an_empty_result(tmp_path):
    result = run_stage("toy", make_arrays, [], params={"scale": 1.0}, cache_root=tmp_path, jobs=2)
    assert (result.done, result.skipped, result.failed) == ([], [], {})
    assert (result.dir / "index.csv").read_text() == "video_id,status,seconds,error\n"


def test_progress_bar_only_when_asked_or_on_a_terminal_outside_ci(tmp_path, capsys, monkeypatch):
    run_stage("toy", make_arrays, _items(2), params={"scale": 1.0}, cache_root=tmp_path, progress=True)
    assert "toy" in capsys.readouterr().err
    monkeypatch.setenv("CI", "true")
    run_stage("toy", make_arrays, _items(2), params={"scale": 1.0}, cache_root=tmp_path, force=True)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------------------------ engines
def test_joblib_jobs2_output_bytes_equal_serial(tmp_path):
    items = _items(6)
    params = {"scale": 0.5, "value_error": [2]}
    serial = run_stage("toy", make_arrays, items, params=params, cache_root=tmp_path / "serial")
    parallel = run_stage("toy", make_arrays, items, params=params, cache_root=tmp_path / "jobs2", jobs=2)
    assert (parallel.done, parallel.skipped, parallel.failed) == (serial.done, serial.skipped, serial.failed)
    assert _npz_bytes(parallel.dir) == _npz_bytes(serial.dir) and len(_npz_bytes(serial.dir)) == 5
    assert (parallel.dir / "params.json").read_bytes() == (serial.dir / "params.json").read_bytes()
    again = run_stage("toy", make_arrays, items, params=params, cache_root=tmp_path / "jobs2", jobs=2)
    assert again.skipped == serial.done and again.done == []


def test_dask_local_cluster_output_bytes_equal_serial(tmp_path):
    distributed = pytest.importorskip("distributed")
    items = _items(6)
    params = {"scale": 0.5, "idtfv_error": [4]}
    serial = run_stage("toy", make_arrays, items, params=params, cache_root=tmp_path / "serial")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, host="127.0.0.1", protocol="tcp",
        dashboard_address=None,
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        dask = run_stage("toy", make_arrays, items, params=params, cache_root=tmp_path / "dask",
                         scheduler=cluster.scheduler_address)
        assert (dask.done, dask.skipped, dask.failed) == (serial.done, serial.skipped, serial.failed)
        assert _npz_bytes(dask.dir) == _npz_bytes(serial.dir) and len(_npz_bytes(serial.dir)) == 5
        with distributed.Client(cluster, set_as_default=False) as client:  # a Client object works too
            again = run_stage("toy", make_arrays, items, params=params, cache_root=tmp_path / "dask",
                              scheduler=client)
        assert again.skipped == serial.done and again.failed == serial.failed


def crash_on_two(entry, params):
    if entry.n == 2 and os.getpid() != params["parent_pid"]:  # never kill the test process itself
        os.kill(os.getpid(), signal.SIGKILL)  # like a decoder segfault or the OOM killer
    return expected(entry.n, 1.0)


@pytest.mark.slow
def test_a_worker_crash_fails_only_its_video_and_the_run_goes_on(tmp_path):
    items = _items(6)
    params = {"parent_pid": os.getpid()}
    result = run_stage("toy", crash_on_two, items, params=params, cache_root=tmp_path, jobs=2)
    assert list(result.failed) == ["vid_02"], result.failed
    assert result.failed["vid_02"].startswith("WorkerCrash: the worker process died while processing this video")
    assert "SIGKILL" in result.failed["vid_02"]
    assert result.done == ["vid_00", "vid_01", "vid_03", "vid_04", "vid_05"]
    _check_outputs(result, [i for i in items if i.n != 2])
    assert list(result.dir.glob(TMP_GLOB)) == []  # no marker or partial file left
    assert read_index(result.dir / "index.csv")["vid_02"].status == "failed"


def test_bad_scheduler_is_a_parameter_error(tmp_path):
    with pytest.raises(ParameterError, match="scheduler"):
        run_stage("toy", make_arrays, _items(1), params={"scale": 1.0}, cache_root=tmp_path, scheduler=42)


# ------------------------------------------------------------------------------------------------ SIGKILL
KILL_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from dataclasses import dataclass
    import numpy as np
    from idtfv.runner import run_stage

    @dataclass(frozen=True)
    class Item:
        video_id: str
        n: int

    def slow(entry, params):
        with open(params["log"], "a") as log:
            log.write(f"{entry.video_id}\\n")
        time.sleep(float(sys.argv[3]))
        rng = np.random.default_rng(entry.n)
        return {"x": rng.standard_normal(300_000).astype(np.float32), "n": np.int64(entry.n)}

    if __name__ == "__main__":
        cache, log, _, jobs = sys.argv[1:5]
        items = [Item(f"v{i:02d}", i) for i in range(16)]
        r = run_stage("slow", slow, items, params={"log": log}, cache_root=cache, jobs=int(jobs))
        print(json.dumps({"done": r.done, "skipped": r.skipped, "failed": r.failed}))
    """
)


def _process_group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_sigkill_mid_run_loses_only_videos_in_flight(tmp_path):
    script = tmp_path / "kill_run.py"
    script.write_text(KILL_SCRIPT)
    cache_root, log = tmp_path / "cache", tmp_path / "started.log"
    env = {**os.environ, "CI": "true"}
    jobs = 2
    proc = subprocess.Popen(
        [sys.executable, str(script), str(cache_root), str(log), "0.3", str(jobs)],
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    out_dir = stage_dir(cache_root, "slow", {"log": str(log)}, create=False)
    deadline = time.monotonic() + 90
    try:
        while len(list(out_dir.glob("*.npz"))) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and its loky workers, like a crashed node
        proc.communicate()
    deadline = time.monotonic() + 30
    while _process_group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)

    existing = {p.stem for p in out_dir.glob("*.npz")}
    started = set(_log_lines(log))
    assert 3 <= len(existing) < 16, "the kill did not land mid-run"
    for name in existing:  # atomic writes: whatever is there is complete
        loaded = load_valid(out_dir / f"{name}.npz")
        assert loaded is not None and int(loaded["n"]) == int(name[1:])
    lost = started - existing
    assert len(lost) <= jobs, f"lost more than the videos in flight: {sorted(lost)}"

    rerun = subprocess.run(
        [sys.executable, str(script), str(cache_root), str(log), "0", "1"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert set(summary["skipped"]) == existing and summary["failed"] == {}
    assert set(summary["done"]) == {f"v{i:02d}" for i in range(16)} - existing
    assert list(out_dir.glob(TMP_GLOB)) == []
    for i in range(16):
        loaded = load_valid(out_dir / f"v{i:02d}.npz")
        np.testing.assert_array_equal(
            loaded["x"], np.random.default_rng(i).standard_normal(300_000).astype(np.float32)
        )
    assert {r.status for r in read_index(out_dir / "index.csv").values()} == {"done"}
    assert len(read_index(out_dir / "index.csv")) == 16


# ------------------------------------------------------------------------------------------------ stamps
def test_stamp_round_trip_lists_every_valid_video(tmp_path):
    items = _items(4)
    params = {"scale": 1.0, "value_error": [2]}
    run_stage("toy", make_arrays, items[:2], params=params, cache_root=tmp_path)
    result = run_stage("toy", make_arrays, items, params=params, cache_root=tmp_path)
    (tmp_path / "s").mkdir()
    stamp = write_stamp(tmp_path / "s" / "features.json", result, stage="toy", params=params)
    assert stamp == json.loads((tmp_path / "s" / "features.json").read_text())
    assert stamp["done"] == ["vid_00", "vid_01", "vid_03"] and stamp["failed"] == {"vid_02": result.failed["vid_02"]}
    back = read_stamp(tmp_path / "s" / "features.json")
    assert back["dir"] == result.dir.resolve() and back["params"] == params and back["stage"] == "toy"
    for vid in back["done"]:
        assert load_valid(back["dir"] / f"{vid}.npz") is not None


@pytest.mark.parametrize(
    "text, match",
    [(None, "not found"), ("{not json", "not a readable"), ("[]", "JSON object"),
     ('{"stage": "f", "dir": "d", "params": {}, "done": "x", "failed": {}}', "'done'")],
)
def test_read_stamp_errors_name_the_file(tmp_path, text, match):
    path = tmp_path / "features.json"
    if text is not None:
        atomic_write_text(path, text)
    with pytest.raises(FormatError, match=match) as info:
        read_stamp(path)
    assert str(path) in str(info.value) and isinstance(info.value, IdtfvError)
