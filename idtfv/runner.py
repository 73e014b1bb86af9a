"""Resumable stage runner: map a per-video function over manifest entries, locally or on a Dask cluster.

A *stage* is a module-level function ``func(entry, params) -> dict[str, np.ndarray]`` applied to every video.
:func:`run_stage` gives each video one result file ``CACHE/<stage>-<hash12>/<video_id>.npz``
(see :mod:`idtfv.cache`) and guarantees what follows. A function whose result may be too large to hold (a long
video's trajectories) writes it instead: with the attribute ``func.writes_npz = True`` it is called as
``func(entry, params, out=path)`` and either writes the ``.npz`` at ``path`` atomically (temp file + ``os.replace``,
as :func:`idtfv.idt.extract_to_file` does) while it computes it and returns None, or returns its (small) arrays,
which are saved as any function's, having used ``path``'s directory for scratch files (named by
:func:`idtfv.atomic.temp_name`, so that a killed run's are removed); :class:`EmptyResult` works as for the others.

- **Resume.** A video whose ``.npz`` exists and reads back intact (:func:`idtfv.cache.check_npz`: every member's
  CRC-32, read through without loading it) is skipped; ``force=True`` recomputes it.
- **Inputs.** The stage directory is keyed by the parameters; what a video's result was computed *from* (its video
  file, or an earlier stage's result) is keyed per video by ``fingerprint(entry, params)`` (e.g.
  :func:`entry_fingerprint`: :func:`idtfv.cache.file_fingerprint` of the video), stored beside the result as
  ``<video_id>.source``: a result whose input's fingerprint has changed since (a video replaced in place, another
  dataset's video under the same id) is recomputed, with a note. An input that cannot be read now (a video deleted
  after its features were extracted) keeps its result.
- **Atomicity.** The worker that computed a result writes it itself (temp file + ``os.replace``) and sends back
  only a small :class:`ItemStatus`; a run killed at any instant (even SIGKILL) loses only the videos in flight.
- **Failure isolation.** An exception in one video (``IdtfvError`` -> its message, anything else ->
  ``"TypeName: message"``; an ``OSError`` on that video's own files, e.g. a name too long, included) is recorded
  in ``index.csv`` and the run goes on; the video gets no ``.npz``.
  With ``jobs > 1`` this holds even when a video kills its worker process (a segfault in a decoder, the OOM
  killer): the videos that were in flight are retried one at a time, and the one that crashes again is recorded
  as ``"WorkerCrash: ..."``. (Dask retries a task whose worker died and then reports ``KilledWorker``.)
- **A full disk stops the run.** A write that fails with ENOSPC/EDQUOT is not the video's fault and every later
  write would fail too: the run stops at once (pending videos are not started, running ones are abandoned) and
  raises :class:`~idtfv.errors.DiskFullError` naming the file; finished results are kept, a rerun resumes.
- **Determinism.** Result files depend only on ``func``, the entry and ``params``, not on ``jobs`` or the
  scheduler (``.npz`` bytes are reproducible, see :func:`idtfv.cache.atomic_savez`).

Execution engines (used as they are, no scheduling of our own):

- ``jobs=1``: in this process, in entry order;
- ``jobs=N`` (``-1`` = all cores): joblib's ``loky`` process pool;
- ``threads=K``: K threads of this process (``concurrent.futures``), each video inside ``thread_context()`` (the
  GPU extractor's worker: one CUDA stream per thread, :mod:`idtfv.idt.gpu_worker`); for functions that release
  the GIL or wait on a device. A video that kills the process is not isolated here (there is no worker process);
- ``scheduler="tcp://host:8786"`` (or a ``distributed.Client``, or a cluster object such as ``LocalCluster``):
  Dask distributed; the cache directory must then be on a file system that every worker sees at the same path.

- **Ids are file names.** Ids are checked (:func:`idtfv.data.manifest.is_valid_video_id`, unique) before anything
  runs, and ids differing only in case are refused when the stage directory is on a case-insensitive file system
  (:func:`idtfv.cache.check_case_twins`: there they would name one file).
- **Empty results are not results.** A stage function raises :class:`EmptyResult` when a video yields nothing
  usable (e.g. no trajectory); its arrays are saved (with the reason under :data:`EMPTY_KEY`, so a resumed run
  still knows), the video gets status ``empty`` and is listed in :attr:`StageResult.empty`, not in ``ok``.
- **Notes.** Video warnings raised while a video is processed (:func:`idtfv.video.collect_video_warnings`, e.g. a
  truncated file) are kept in that video's ``error`` column of a ``done`` row and in :attr:`StageResult.notes`,
  instead of one console line per video.

``index.csv`` has the columns ``video_id,status,seconds,error`` (status ``done``, ``empty`` or ``failed``; for
``done`` the ``error`` column holds the notes), one row per video
ever run in this stage directory, sorted by ``video_id``; it is rewritten atomically every few seconds during a run
and at its end. Two ``run_stage`` calls on the same stage directory at the same time are refused
(:func:`idtfv.lock.exclusive_lock` on ``<dir>/.lock``, released by the OS when the process ends, however it ends).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from idtfv.allocator import tune_heap
from idtfv.atomic import disk_full_error
from idtfv.cache import (NPZ_COMPRESSLEVEL, atomic_savez, atomic_write_text, check_case_twins, check_npz,
                         file_fingerprint, remove_stale_temp_files, stage_dir)
from idtfv.errors import DiskFullError, IdtfvError, ManifestError, ParameterError, exception_line
from idtfv.lock import LOCK_NAME, exclusive_lock
from idtfv.options import check_jobs, local_workers

__all__ = ["StageResult", "ItemStatus", "EmptyResult", "EMPTY_KEY", "run_stage", "read_index", "read_stamp", "write_stamp", "INDEX_COLUMNS",
           "DEFAULT_COMPRESSLEVEL", "entry_fingerprint", "stored_fingerprint", "SOURCE_SUFFIX", "INPUT_CHANGED"]

#: Columns of a stage directory's ``index.csv``.
INDEX_COLUMNS = ("video_id", "status", "seconds", "error")
#: Seconds between two rewrites of ``index.csv`` while a run is going on.
INDEX_FLUSH_SECONDS = 5.0
#: DEFLATE level of the per-video ``.npz`` files (:data:`idtfv.cache.NPZ_COMPRESSLEVEL`).
DEFAULT_COMPRESSLEVEL = NPZ_COMPRESSLEVEL
#: Name of the 0-d string array holding the reason in the result file of an :class:`EmptyResult`.
EMPTY_KEY = "_empty_reason"
#: Suffix of the file beside a result that holds the fingerprint of its input (``<video_id>.source``).
SOURCE_SUFFIX = ".source"
#: The note of a result recomputed because its input changed.
INPUT_CHANGED = "its input changed since the stored result was computed: recomputed"


class EmptyResult(IdtfvError):
    """Raised by a stage function when a video yields nothing usable (e.g. no trajectory survived).

    Parameters
    ----------
    reason : str
        One line: why (``"13 frames; at least L+1=16 needed"``).
    arrays : dict of str to ndarray, optional
        The (empty) result to store all the same, e.g. zero-row descriptor arrays or a zero vector.
    """

    def __init__(self, reason: str, arrays: Mapping | None = None):
        super().__init__(reason)
        self.reason = " ".join(str(reason).split())
        self.arrays = dict(arrays or {})

    def __reduce__(self):  # picklable through worker processes
        return type(self), (self.reason, self.arrays)


@dataclass(frozen=True)
class StageResult:
    """What a :func:`run_stage` call did.

    Attributes
    ----------
    dir : Path
        The stage directory ``CACHE/<stage>-<hash12>``; the result of video ``v`` is ``dir / f"{v}.npz"``.
    done : list of str
        Videos computed in this call (entry order).
    skipped : list of str
        Videos whose valid result already existed (entry order).
    failed : dict of str to str
        Video id -> one-line error message, for videos that raised (entry order).
    video_ids : list of str
        Every entry of the call, in order.
    empty : dict of str to str
        Video id -> reason, for videos whose result is empty (:class:`EmptyResult`), computed now or earlier.
    notes : dict of str to str
        Video id -> the video warnings raised while computing it in this call (e.g. a truncated file).
    """

    dir: Path
    done: list[str]
    skipped: list[str]
    failed: dict[str, str]
    video_ids: list[str] = field(default_factory=list, repr=False)
    empty: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> list[str]:
        """Videos that have a valid, non-empty result now (computed or skipped), in entry order."""
        return [vid for vid in self.video_ids if vid not in self.failed and vid not in self.empty]

    def path(self, video_id: str) -> Path:
        """The result file of ``video_id``."""
        return self.dir / f"{video_id}.npz"


@dataclass(frozen=True)
class ItemStatus:
    """The small record a worker sends back for one video (never the arrays themselves).

    ``stop`` is set (with status ``"failed"``) when the run cannot go on: the disk is full.
    """

    video_id: str
    status: str  # "done" | "skipped" | "failed" | "empty" (error: the reason; for "done": the notes)
    seconds: float
    error: str = ""
    stop: DiskFullError | None = None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error_message(exc: BaseException) -> str:
    if isinstance(exc, IdtfvError):
        return _one_line(str(exc)) or type(exc).__name__
    return exception_line(exc)


def entry_fingerprint(entry, params: Mapping) -> str | None:
    """The fingerprint of a manifest entry's video file (:func:`idtfv.cache.file_fingerprint` of ``entry.path``),
    or None when it cannot be read now; a ``fingerprint`` for :func:`run_stage` (stages computed from the video)."""
    try:
        return file_fingerprint(entry.path)
    except OSError:
        return None


def _source_path(out_dir, video_id: str) -> Path:
    return Path(out_dir) / f"{video_id}{SOURCE_SUFFIX}"


def stored_fingerprint(out_dir, video_id: str) -> str | None:
    """The input fingerprint stored with ``video_id``'s result in the stage directory ``out_dir`` (None: none
    stored, e.g. a stage run without ``fingerprint``)."""
    try:
        return _source_path(out_dir, video_id).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _marker(out_dir, video_id: str) -> Path:
    """The file that says "a worker is running this video now" (matches the cache's temp-file pattern)."""
    return Path(out_dir) / f".{video_id}.running.tmp"


def _process_item(entry, *, stage_func: Callable, params: Mapping, out_dir: str, force: bool,
                  compresslevel: int | None = DEFAULT_COMPRESSLEVEL, mark: bool = False,
                  fingerprint: Callable | None = None, huffman_only: tuple[str, ...] = ()) -> ItemStatus:
    """Run ``func`` on one entry in a worker and write its result atomically; never raises for a bad video.

    With ``mark=True`` a marker file exists while ``func`` runs, so that if the process dies (a decoder
    segfault, the OOM killer) the parent can tell which videos were in flight. With ``fingerprint``, a stored
    result whose input's fingerprint differs from the stored one is recomputed, and the fingerprint taken before
    the computation is stored after the result (a run killed in between leaves a result without one, which is
    trusted: it was computed from that input).
    """
    tune_heap()  # a worker process frees and allocates the same frame-sized arrays all along (once)
    video_id = entry.video_id
    out = Path(out_dir) / f"{video_id}.npz"
    marker = None
    start = time.perf_counter()
    notes: list[str] = []
    try:  # everything, file-system calls included: an OSError on this video's files is this video's failure
        source = None if fingerprint is None else fingerprint(entry, params)
        if not force:
            valid = check_npz(out)  # read through, not loaded: flat memory for a long video's result
            stored = None if valid is None or source is None else stored_fingerprint(out_dir, video_id)
            if valid is not None and stored not in (None, source):
                notes.append(INPUT_CHANGED)
            elif valid is not None:
                if EMPTY_KEY in valid:
                    return ItemStatus(video_id, "empty", 0.0, _empty_reason(out))
                return ItemStatus(video_id, "skipped", 0.0)
        if mark:
            marker = _marker(out_dir, video_id)
            marker.touch()
        from idtfv.video import collect_video_warnings

        try:
            with collect_video_warnings() as warned:
                if writes_npz(stage_func):  # it writes `out` itself (atomically), as it computes it
                    before = _identity(out)  # (a forced run's old file must not pass for the new one)
                    arrays = stage_func(entry, params, out=out)
                else:
                    arrays = stage_func(entry, params)
            notes += warned
        except EmptyResult as empty:
            arrays = {**empty.arrays, EMPTY_KEY: np.array(empty.reason)}
            _save(out, arrays, compresslevel, source, huffman_only)
            return ItemStatus(video_id, "empty", time.perf_counter() - start, empty.reason)
        if writes_npz(stage_func) and arrays is None:
            if not out.is_file() or _identity(out) == before:
                raise TypeError(f"stage function {getattr(stage_func, '__name__', stage_func)!r} (writes_npz) "
                                f"returned None without writing {out.name}; expected the file written, or arrays")
            if source is not None:
                atomic_write_text(_source_path(out.parent, out.stem), source + "\n")
            return ItemStatus(video_id, "done", time.perf_counter() - start, " | ".join(notes))
        if not isinstance(arrays, Mapping):
            raise TypeError(
                f"stage function {getattr(stage_func, '__name__', stage_func)!r} returned {type(arrays).__name__}; "
                "expected a dict of name -> numpy array"
            )
        _save(out, arrays, compresslevel, source, huffman_only)
    except Exception as exc:  # noqa: BLE001 - failure isolation: record and go on
        with contextlib.suppress(OSError):
            out.unlink(missing_ok=True)  # no stale or forced-over result may stand for a failed video
            _source_path(out.parent, video_id).unlink(missing_ok=True)
        full = disk_full_error(exc, out)
        if full is not None:  # not this video's fault, and every later write would fail too: stop the run
            return ItemStatus(video_id, "failed", time.perf_counter() - start, str(full), stop=full)
        return ItemStatus(video_id, "failed", time.perf_counter() - start, _error_message(exc))
    finally:
        if marker is not None:
            with contextlib.suppress(OSError):
                marker.unlink(missing_ok=True)
    return ItemStatus(video_id, "done", time.perf_counter() - start, " | ".join(notes))


def _empty_reason(out: Path) -> str:
    """The reason stored in an empty result (a file :func:`~idtfv.cache.check_npz` found valid): that member only."""
    with open(out, "rb") as f, np.load(f, allow_pickle=False) as data:
        return str(data[EMPTY_KEY])


def _identity(path: Path) -> tuple | None:
    """(device, inode, size, mtime) of ``path``, None if it does not exist: an atomic rewrite changes it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def writes_npz(func) -> bool:
    """Whether the stage function ``func`` writes its result file itself (``func.writes_npz``; see the module)."""
    return getattr(func, "writes_npz", False) is True


def _save(out: Path, arrays: Mapping, compresslevel: int | None, source: str | None,
          huffman_only: tuple[str, ...] = ()) -> None:
    """The result, then its input's fingerprint (when there is one) beside it; both atomic."""
    atomic_savez(out, arrays, compresslevel=compresslevel, huffman_only=huffman_only)
    if source is not None:
        atomic_write_text(_source_path(out.parent, out.stem), source + "\n")


def read_index(path) -> dict[str, ItemStatus]:
    """Read a stage ``index.csv`` into ``{video_id: ItemStatus}``; a missing or unreadable file gives ``{}``."""
    records: dict[str, ItemStatus] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != INDEX_COLUMNS:
                return {}
            for row in reader:
                try:
                    seconds = float(row["seconds"]) if row["seconds"] else 0.0
                except ValueError:
                    seconds = 0.0
                records[row["video_id"]] = ItemStatus(row["video_id"], row["status"], seconds, row["error"] or "")
    except (OSError, csv.Error, UnicodeDecodeError, KeyError):
        return {}
    return records


def _write_index(path: Path, records: Mapping[str, ItemStatus]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    for video_id in sorted(records):
        rec = records[video_id]
        writer.writerow([rec.video_id, rec.status, f"{rec.seconds:.3f}", rec.error])
    atomic_write_text(path, buffer.getvalue())


def _check_entries(entries) -> list:
    """``entries`` as a list, each with a valid (:func:`idtfv.data.manifest.is_valid_video_id`), unique id."""
    from idtfv.data.manifest import VIDEO_ID_RULE, is_valid_video_id  # not at import: idtfv.data loads OpenCV

    entries = list(entries)
    seen = set()
    for entry in entries:
        video_id = getattr(entry, "video_id", None)
        if not is_valid_video_id(video_id):
            shown = (f"{video_id[:40]!r}... ({len(video_id)} characters)" if isinstance(video_id, str)
                     and len(video_id) > 60 else repr(video_id))
            raise ManifestError(f"video_id {shown} is not allowed; expected {VIDEO_ID_RULE} (it names the per-video "
                                "files) — fix the manifest")
        if video_id in seen:
            raise ManifestError(f"video_id {video_id!r} appears twice; ids must be unique — fix the manifest")
        seen.add(video_id)
    return entries


def _want_progress(progress) -> bool:
    if progress is not None:
        return bool(progress)
    if os.environ.get("CI"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _Save(NamedTuple):
    """How the workers save each result (:func:`_process_item`'s keywords of the same names)."""

    compresslevel: int | None
    huffman_only: tuple[str, ...]


def _iter_serial(func, entries, params, out_dir, force, save, fingerprint) -> Iterator[ItemStatus]:
    for entry in entries:
        yield _process_item(entry, stage_func=func, params=params, out_dir=out_dir, force=force, **save._asdict(),
                            fingerprint=fingerprint)


def _iter_joblib(func, entries, params, out_dir, force, save, fingerprint, jobs) -> Iterator[ItemStatus]:
    """Run on joblib's loky pool; if a worker process dies, quarantine the videos it may have been running.

    loky shuts the whole pool down when one worker dies. The videos whose marker files are still there were in
    flight; each is then retried alone in a one-worker pool: a video that kills its worker again is recorded as
    failed, the others complete, and the rest of the run resumes on ``jobs`` workers.
    """
    from joblib import Parallel, delayed
    from joblib.externals.loky import ProcessPoolExecutor
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    options = dict(stage_func=func, params=params, out_dir=out_dir, force=force, **save._asdict(), mark=True,
                   fingerprint=fingerprint)
    pending = {entry.video_id: entry for entry in entries}
    started_at = time.time()

    def this_call(status: ItemStatus) -> ItemStatus:
        # A worker of a crashed pool is killed a moment after the crash is reported: it may still finish its video,
        # which a retry then finds valid. That result was computed by this call: "done", not "skipped".
        if status.status == "skipped":
            with contextlib.suppress(OSError):
                if (Path(out_dir) / f"{status.video_id}.npz").stat().st_mtime >= started_at:
                    return ItemStatus(status.video_id, "done", 0.0)
        return status

    first_round = True
    while pending:
        if not first_round:  # results the crashed pool wrote before it went down belong to this call
            for video_id in list(pending):
                out = Path(out_dir) / f"{video_id}.npz"
                valid = check_npz(out) if out.exists() and out.stat().st_mtime >= started_at else None
                if valid is not None:
                    del pending[video_id]
                    if EMPTY_KEY in valid:
                        yield ItemStatus(video_id, "empty", 0.0, _empty_reason(out))
                    else:
                        yield ItemStatus(video_id, "done", 0.0)
        first_round = False
        try:  # results in completion order (joblib >= 1.4), so the progress bar and the index follow the work
            parallel = Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered", batch_size=1)
        except ValueError:
            parallel = Parallel(n_jobs=jobs, backend="loky", return_as="generator", batch_size=1)
        todo = list(pending.values())  # joblib consumes the task generator lazily while we delete below
        results = parallel(delayed(_process_item)(entry, **options) for entry in todo)
        try:
            for status in results:
                del pending[status.video_id]
                yield this_call(status)
            return
        except TerminatedWorkerError as exc:
            crash = _one_line(str(exc))
            suspects = [entry for vid, entry in pending.items() if _marker(out_dir, vid).exists()]
            if not suspects:
                raise IdtfvError(
                    f"a worker process died outside any video ({crash[:200]}); finished videos are kept in the "
                    "cache — rerun to resume, with fewer --jobs if memory ran out"
                ) from exc
        finally:  # the consumer stopped early (a full disk, Ctrl-C): joblib cancels what is pending or running
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # joblib's "tasks ... have been cancelled": that is the point
                results.close()
        for entry in suspects:
            _marker(out_dir, entry.video_id).unlink(missing_ok=True)
            # A private one-worker pool, not loky's process-wide reusable executor: joblib reuses that one for the
            # next Parallel call and then expects state that only joblib sets on it (an AttributeError otherwise).
            executor = ProcessPoolExecutor(max_workers=1)
            try:
                status = executor.submit(_process_item, entry, **options).result()
            except TerminatedWorkerError as exc:
                _marker(out_dir, entry.video_id).unlink(missing_ok=True)
                codes = re.search(r"exit codes of the workers are \{([^}]*)\}", str(exc))
                how = f"exit code {codes.group(1)}" if codes else "no exit code"
                status = ItemStatus(
                    entry.video_id, "failed", 0.0,
                    f"WorkerCrash: the worker process died while processing this video ({how}: a crash in native "
                    "code, e.g. the video decoder, or the out-of-memory killer)",
                )
            finally:
                executor.shutdown(wait=True)
            del pending[entry.video_id]
            yield this_call(status)


def _iter_threads(func, entries, params, out_dir, force, save, fingerprint, threads,
                  context) -> Iterator[ItemStatus]:
    """Run on ``threads`` threads of this process, each video inside ``context()``; results in completion order.

    Stopping early (a full disk, Ctrl-C) starts nothing more and waits for the videos in flight (a thread cannot
    be abandoned: it must not write after the run's lock is released).
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    def one(entry):
        with context() if context is not None else contextlib.nullcontext():
            return _process_item(entry, stage_func=func, params=params, out_dir=out_dir, force=force,
                                 **save._asdict(), fingerprint=fingerprint)

    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="idtfv-stage")
    try:
        futures = [executor.submit(one, entry) for entry in entries]
        for future in as_completed(futures):
            yield future.result()  # _process_item never raises for a bad video
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _iter_dask(func, entries, params, out_dir, force, save, fingerprint, scheduler,
               stage) -> Iterator[ItemStatus]:
    from distributed import Client, as_completed

    own_client = False
    if isinstance(scheduler, Client):
        client = scheduler
    else:
        address = scheduler if isinstance(scheduler, str) else getattr(scheduler, "scheduler_address", None)
        if not isinstance(address, str):
            raise ParameterError(
                f"scheduler must be a Dask scheduler address such as 'tcp://host:8786', a distributed.Client "
                f"or a cluster object, got {scheduler!r}"
            )
        failure = None
        try:
            client = Client(address, set_as_default=False, timeout="30s")
        except (OSError, TypeError, RuntimeError) as exc:  # TypeError, RuntimeError: TLS settings (docs/DASK.md)
            failure = _one_line(str(exc))
        if failure is not None:
            # the half-made Client (kept alive by the exception's frames until here) is finalised now: its __del__
            # closes its event loop, and run by a garbage collection at a random later moment (inside the next
            # Client's start, which holds the lock that close() takes) it deadlocked a test process
            gc.collect()
            raise ParameterError(
                f"cannot connect to the Dask scheduler at {address} ({failure}); start it with "
                "'dask scheduler' and workers with 'dask worker <address>' (a tls:// one needs the client's "
                "certificate in the Dask configuration, see docs/DASK.md), or leave the scheduler unset"
            )
        own_client = True
    try:
        keys = [f"{stage}-{entry.video_id}-{os.getpid()}-{time.monotonic_ns()}" for entry in entries]
        futures = client.map(
            _process_item, entries, stage_func=func, params=params, out_dir=out_dir, force=force,
            **save._asdict(), fingerprint=fingerprint, key=keys, pure=False,
        )
        video_of = {future.key: entry.video_id for future, entry in zip(futures, entries, strict=True)}
        finished = False
        try:
            for future in as_completed(futures, loop=client.loop):
                try:
                    yield future.result()
                except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: the worker died on this video
                    yield ItemStatus(video_of[future.key], "failed", 0.0, _error_message(exc))
                finally:
                    future.release()
            finished = True
        finally:
            if not finished:  # the consumer stopped early (a full disk, Ctrl-C): start nothing more
                with contextlib.suppress(Exception):
                    client.cancel(futures)
    finally:
        if own_client:
            client.close()


def run_stage(
    stage: str,
    func: Callable,
    entries: Iterable,
    *,
    params: Mapping,
    cache_root,
    jobs: int = 1,
    scheduler=None,
    force: bool = False,
    progress: bool | None = None,
    compresslevel: int | None = DEFAULT_COMPRESSLEVEL,
    huffman_only: Iterable[str] = (),
    threads: int | None = None,
    thread_context: Callable | None = None,
    fingerprint: Callable | None = None,
) -> StageResult:
    """Apply ``func`` to every entry, saving one ``.npz`` per video in the stage's cache directory.

    Parameters
    ----------
    stage : str
        Stage name (letters, digits, ``_``, ``-``), e.g. ``"features"``.
    func : callable
        Module-level ``func(entry, params) -> dict[str, np.ndarray]``, run in worker processes; or, with
        ``func.writes_npz = True``, ``func(entry, params, out=path)``, which writes the result itself (returns None)
        or returns its arrays (see the module).
    entries : iterable
        Objects with a unique, filesystem-safe ``.video_id`` (e.g. ``idtfv.data.manifest.VideoEntry``); they
        are shipped to the workers as they are.
    params : mapping
        JSON-serialisable stage parameters, passed to ``func`` and hashed into the directory name.
    cache_root : path-like
        Directory holding the stage directories.
    jobs : int
        Local worker processes (joblib/loky); 1 runs in this process, -1 uses every core. Ignored with
        ``scheduler``.
    scheduler : str or distributed.Client or cluster, optional
        Dask distributed scheduler to run on instead of local processes.
    force : bool
        Recompute videos that already have a valid result.
    progress : bool, optional
        Show a tqdm progress bar on stderr; default: only on a terminal and when ``CI`` is not set.
    compresslevel : int or None
        DEFLATE level (0-9) of the result files; None = zlib's default. It changes neither the values nor the
        stage directory (files written at any level are valid results).
    huffman_only : iterable of str
        Names of result arrays compressed with Huffman codes only, no string matching
        (:func:`idtfv.cache.atomic_savez`): for arrays whose bytes rarely repeat (float descriptors). Like
        ``compresslevel``, it changes neither the values nor the stage directory.
    threads : int, optional
        Run the videos on this many threads of this process instead (``jobs`` is then not used; ``scheduler``
        still wins). Neither the files nor the stage directory depend on it.
    thread_context : callable, optional
        With ``threads``: ``thread_context()`` gives a context manager that each video runs inside, in its thread
        (e.g. the thread's CUDA stream made current).
    fingerprint : callable, optional
        Module-level ``fingerprint(entry, params) -> str or None``: what identifies the input a video's result is
        computed from, beyond ``params`` (:func:`entry_fingerprint` for the video file). Stored beside each result
        (``<video_id>.source``); a stored result whose fingerprint differs now is recomputed (with a note); None
        (input unreadable now) keeps a stored result.

    Returns
    -------
    StageResult
        ``done``, ``skipped`` and ``failed`` video ids of this call.

    Raises
    ------
    ManifestError
        Duplicate or unsafe video ids (the rule: :func:`idtfv.data.manifest.is_valid_video_id`), or ids differing
        only in case when the stage directory is on a case-insensitive file system
        (:func:`idtfv.cache.check_case_twins`).
    ParameterError
        Bad ``stage``, ``params``, ``jobs`` or ``scheduler``.
    DiskFullError
        A write failed for lack of space: the run stopped at once (finished videos are kept, rerun to resume).
    IdtfvError
        Another run holds the stage directory, or a local worker process died outside any video (finished
        videos are kept, rerun to resume).
    """
    entries = _check_entries(entries)
    jobs = check_jobs(jobs)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ParameterError(f"threads must be None or a positive integer, got {threads!r}")
    if thread_context is not None and not callable(thread_context):
        raise ParameterError(f"thread_context must be None or a callable giving a context manager, got "
                             f"{thread_context!r}")
    if compresslevel is not None and (isinstance(compresslevel, bool) or compresslevel not in range(10)):
        raise ParameterError(f"compresslevel must be an integer 0-9 or None, got {compresslevel!r}")
    try:
        names = None if isinstance(huffman_only, str) else tuple(huffman_only)  # once: it may be an iterator
    except TypeError:  # not iterable
        names = None
    if names is None or not all(isinstance(name, str) for name in names):
        raise ParameterError(f"huffman_only must be an iterable of array names, got {huffman_only!r}")
    huffman_only = names
    if not callable(func):
        raise ParameterError(f"func must be a module-level function (entry, params) -> dict, got {func!r}")
    if fingerprint is not None and not callable(fingerprint):
        raise ParameterError(f"fingerprint must be None or a module-level function (entry, params) -> str or None, "
                             f"got {fingerprint!r}")
    # absolute, so that workers with another working directory (Dask) write to the same place
    out = stage_dir(Path(cache_root).absolute(), stage, params)
    with exclusive_lock(out / LOCK_NAME, what=f"{stage!r} run"):
        # before anything is written: ids differing only in case name one file on a case-insensitive file system
        check_case_twins([entry.video_id for entry in entries], out,
                         remedy="keep the cache on a case-sensitive file system (--cache DIR)")
        return _run_locked(stage, func, entries, out, params=params, jobs=jobs, scheduler=scheduler, force=force,
                           progress=progress, save=_Save(compresslevel, huffman_only), threads=threads,
                           thread_context=thread_context, fingerprint=fingerprint)


def _run_locked(stage, func, entries, out: Path, *, params, jobs, scheduler, force, progress, save,
                threads=None, thread_context=None, fingerprint=None):
    remove_stale_temp_files(out)
    index_path = out / "index.csv"
    records = read_index(index_path)
    params = dict(params)
    order = [entry.video_id for entry in entries]
    statuses: dict[str, ItemStatus] = {}

    if scheduler is not None:
        stream = _iter_dask(func, entries, params, str(out), force, save, fingerprint, scheduler, stage)
    elif threads is not None:
        stream = _iter_threads(func, entries, params, str(out), force, save, fingerprint, threads,
                               thread_context)
    elif jobs != 1 and len(entries) > 1 and (workers := local_workers(jobs, len(entries))) > 1:
        stream = _iter_joblib(func, entries, params, str(out), force, save, fingerprint, workers)
    else:
        stream = _iter_serial(func, entries, params, str(out), force, save, fingerprint)

    bar = None
    if _want_progress(progress) and entries:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(entries), desc=stage, unit="video", file=sys.stderr, dynamic_ncols=True)
    last_flush = time.monotonic()
    stop = None
    n_failed = 0  # of statuses: kept as it goes (recounting every video's status after each one is quadratic)
    try:
        for status in stream:
            if status.stop is not None:
                stop = status.stop
                break
            previous = statuses.get(status.video_id)
            statuses[status.video_id] = status
            n_failed += (status.status == "failed") - (previous is not None and previous.status == "failed")
            if status.status == "empty" and status.seconds == 0.0 and \
                    records.get(status.video_id, ItemStatus("", "", 0.0)).status == "empty":
                pass  # an empty result found again: keep the row of the run that computed it
            elif status.status != "skipped":
                records[status.video_id] = status
            elif records.get(status.video_id, ItemStatus("", "", 0.0)).status != "done":
                # a valid result whose row was lost (killed run) or says "failed" from an older run
                records[status.video_id] = ItemStatus(status.video_id, "done", 0.0)
            if bar is not None:
                bar.update(1)
                if n_failed:
                    bar.set_postfix(failed=n_failed, refresh=False)
            if time.monotonic() - last_flush > INDEX_FLUSH_SECONDS:
                _write_index(index_path, records)
                last_flush = time.monotonic()
    finally:
        stream.close()  # an early stop: the engine starts nothing more and abandons what is running
        if bar is not None:
            bar.close()
        # partial files of workers that died or were abandoned (a crashed pool, an early stop); we hold the lock
        remove_stale_temp_files(out)
        try:
            _write_index(index_path, records)
        except DiskFullError:
            if stop is None:
                raise
    if stop is not None:
        raise stop

    done = [vid for vid in order if statuses[vid].status == "done"]
    skipped = [vid for vid in order if statuses[vid].status == "skipped"]
    failed = {vid: statuses[vid].error for vid in order if statuses[vid].status == "failed"}
    empty = {vid: statuses[vid].error for vid in order if statuses[vid].status == "empty"}
    notes = {vid: statuses[vid].error for vid in order if statuses[vid].status == "done" and statuses[vid].error}
    return StageResult(out, done, skipped, failed, order, empty=empty, notes=notes)


def write_stamp(path, result: StageResult, *, stage: str, params: Mapping) -> dict:
    """Write a stage stamp JSON (the Makefile's file target for a finished stage) atomically.

    The stamp is ``{"stage", "dir", "params", "done", "failed", "empty"}``: ``dir`` is the absolute stage
    directory, ``done`` every video id with a valid, non-empty result (computed now or earlier, entry order),
    ``failed`` ``{video_id: message}`` and ``empty`` ``{video_id: reason}`` (videos without usable output, e.g. no
    trajectory; left out of later stages). Returns the dict written.
    """
    from idtfv.cache import _jsonable, atomic_write_json

    stamp = {
        "stage": stage,
        "dir": str(Path(result.dir).resolve()),
        "params": _jsonable(params, "params"),
        "done": list(result.ok),
        "failed": dict(result.failed),
        "empty": dict(getattr(result, "empty", {}) or {}),
    }
    atomic_write_json(path, stamp)
    return stamp


def read_stamp(path) -> dict:
    """Read and check a stage stamp written by :func:`write_stamp` (e.g. ``features.json``).

    Returns the stamp dict with ``"dir"`` as a :class:`~pathlib.Path` (a relative one is taken relative to the
    stamp's directory); the result of video ``v`` is ``stamp["dir"] / f"{v}.npz"``.

    Raises
    ------
    FormatError
        If the file is missing, not JSON, lacks the stamp keys, or lists done videos in a results directory that
        no longer exists.
    """
    import json

    from idtfv.errors import FormatError

    path = Path(path)
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(path, "stage stamp not found; run the stage first (e.g. idtfv features --out)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(path, f"not a readable stage stamp JSON ({_one_line(str(exc))})") from None
    expected = {"stage": str, "dir": str, "params": dict, "done": list, "failed": dict}
    if not isinstance(stamp, dict):
        raise FormatError(path, f"expected a JSON object with keys {sorted(expected)}, got {type(stamp).__name__}")
    for key, kind in expected.items():
        if not isinstance(stamp.get(key), kind):
            got = repr(stamp.get(key))[:60]
            raise FormatError(path, f"stage stamp key {key!r} should be a {kind.__name__}, got {got}; rerun the stage")
    directory = Path(stamp["dir"])
    stamp["dir"] = directory if directory.is_absolute() else (path.parent / directory)
    if not isinstance(stamp.get("empty", {}), dict):
        raise FormatError(path, f"stage stamp key 'empty' should be a dict, got {repr(stamp['empty'])[:60]}; "
                                "rerun the stage")
    stamp.setdefault("empty", {})  # stamps written before the key existed
    if stamp["done"] and not stamp["dir"].is_dir():  # the results were deleted or moved, their stamp was not
        raise FormatError(path, f"its results directory {stamp['dir']} is gone (deleted or moved); delete this "
                                f"stamp and rerun the stage (make: add REFRESH=1)")
    return stamp
