"""The ``idtfv`` command: one argparse program whose subcommands are the pipeline stages.

The dispatcher is part of the base and imports no stage. A stage package offers its subcommands as entry points
of the group :data:`ENTRY_POINT_GROUP` (``pyproject.toml``, ``[project.entry-points."idtfv.commands"]``): the
entry point's name is the subcommand, its value a function ``add(subparsers)`` that adds that one subparser and
sets ``func=`` (a function of the parsed arguments returning an exit status or None). ``idtfv COMMAND ...``
loads only COMMAND's module; ``idtfv --help`` loads every command module, which therefore import nothing heavy at
module level (NumPy at most; Numba kernels, scikit-learn and torch load inside the commands).

Built in here: ``idtfv dataset`` (the manifest and the synthetic default dataset are base services).

Every subcommand reports bad input (:class:`~idtfv.errors.IdtfvError`, ``OSError``, a bad option) as one
``error: ...`` line on stderr and exits with status 2. A stage run in which some videos failed prints a summary
and exits with status 1, unless ``--allow-failed`` is given.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

from idtfv.allocator import tune_heap
from idtfv.errors import EXIT_BAD_INPUT, DiskFullError, IdtfvError, ParameterError, exception_text
from idtfv.options import check_jobs

__all__ = ["main", "build_parser", "command_table", "OneLineParser", "SubcommandParser", "add_runner_options",
           "report_failures", "run_command", "one_line_warnings", "error_line", "is_out_of_memory", "quick_exit",
           "sequential_opencv",
           "sigterm_as_interrupt", "interrupt_once", "Terminated", "interrupt_status", "closed_stdout",
           "ENTRY_POINT_GROUP", "EXIT_FAILED_VIDEOS", "EXIT_CLOSED_STDOUT"]

#: Entry-point group through which stage packages add ``idtfv`` subcommands.
ENTRY_POINT_GROUP = "idtfv.commands"
#: Exit status of a stage run in which some videos failed (without ``--allow-failed``).
EXIT_FAILED_VIDEOS = 1
_DATASET_KINDS = ("default", "ucf101", "hmdb51", "folder", "csv")
_MAX_LISTED_FAILURES = 10


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one ``error: ...`` line and exit status 2 (no usage block)."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


class SubcommandParser(OneLineParser):
    """The parser of one ``idtfv`` subcommand: an option it does not know is its error, naming it and its --help
    (``idtfv features: unrecognized arguments: ...``), not the dispatcher's (``idtfv: ...``)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extra = super().parse_known_args(args, namespace)
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return namespace, extra


#: What an ``error:`` line about a failed allocation advises.
OUT_OF_MEMORY_FIX = ("lower the options that size the work (--track-length, --resize-width, --jobs, ...) or free "
                     "memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed allocation: a :class:`MemoryError` (NumPy, Python) or OpenCV's ``cv2.error`` for
    one (``-4: Insufficient memory``, or a C++ ``std::bad_alloc`` it passed on), told apart without importing cv2."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__module__ != "cv2" or type(exc).__name__ != "error":
        return False
    return getattr(exc, "code", None) == -4 or "bad_alloc" in str(exc) or "Insufficient memory" in str(exc)


def error_line(exc: BaseException, *, where: str | None = None) -> str:
    """The one-line ``error: ...`` text of an exception (whitespace folded).

    A failed allocation (:func:`is_out_of_memory`: NumPy's "Unable to allocate 572. GiB for an array ...", say, from
    an absurd option, or OpenCV's) is "out of memory" with its text and :data:`OUT_OF_MEMORY_FIX`; ``where`` (the
    input's path) leads the line when the message does not name it already.
    """
    text = " ".join(exception_text(exc).split()) or type(exc).__name__
    if is_out_of_memory(exc):
        text = f"out of memory ({text}); {OUT_OF_MEMORY_FIX}"
    if where is not None and where not in text:
        text = f"{where}: {text}"
    return f"error: {text}"


@contextlib.contextmanager
def one_line_warnings(stream=None):
    """Show idtfv's warnings (e.g. :class:`idtfv.video.TruncatedVideoWarning`) raised inside as one
    ``warning: message`` line each on stderr, instead of Python's two-line ``file:line: Category`` block.
    Other warnings are shown as Python shows them."""
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if category.__module__.startswith("idtfv"):
            print(f"warning: {' '.join(str(message).split())}", file=stream or sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread by :func:`sigterm_as_interrupt`: like Ctrl-C, it unwinds the
    command (temporary files and directories are removed on the way); the command exits with status 128 + the
    signal's number (143 for SIGTERM, 129 for SIGHUP), as a shell reports a process killed by it."""

    def __init__(self, signum: int = 15):
        super().__init__(signum)
        self.signum = int(signum)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Inside, SIGTERM and SIGHUP (a closed terminal) raise :class:`Terminated` in the main thread instead of killing
    the process at once, so that the clean-up of a command (its temporary output) runs. A signal the process ignores
    (``nohup``) stays ignored. Outside the main thread it does nothing."""
    import signal
    import threading

    def terminate(signum, frame):
        raise Terminated(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, terminate)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def interrupt_once():
    """Inside, the first Ctrl-C raises ``KeyboardInterrupt`` and the first SIGTERM or SIGHUP raises
    :class:`Terminated` (as :func:`sigterm_as_interrupt`); from then on all three are ignored,
    so that the clean-up the first one started (removing the partial output) and the command's one line run to the
    end: a second Ctrl-C used to stop the clean-up half way and leave the partial output. A signal the process
    ignores (``nohup``) stays ignored; the previous handlers come back on leaving. Outside the main thread it does
    nothing."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.getsignal(s) for s in signals}
    caught = [s for s in signals if previous[s] is not signal.SIG_IGN]

    def first(signum, frame):
        for s in caught:  # the clean-up starts now: nothing may interrupt it
            signal.signal(s, signal.SIG_IGN)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    for s in caught:
        signal.signal(s, first)
    try:
        yield
    finally:
        for s in caught:
            signal.signal(s, previous[s])


def interrupt_status(exc: KeyboardInterrupt) -> int:
    """The exit status of a command stopped by ``exc``: 128 + the signal's number for :class:`Terminated` (143 for
    SIGTERM), else 130 (128 + SIGINT), as a shell reports a process killed by that signal."""
    return 128 + exc.signum if isinstance(exc, Terminated) else 130


#: Exit status of a command whose stdout was closed by its reader (``... -o - | head``): 128 + SIGPIPE.
EXIT_CLOSED_STDOUT = 141


def closed_stdout() -> int:
    """A command's stdout pipe was closed by its reader (``BrokenPipeError``): point stdout at ``/dev/null`` (so
    that the interpreter's last flush of what is still buffered raises no "Exception ignored" message) and return
    :data:`EXIT_CLOSED_STDOUT`. Nothing is printed: the reader took what it wanted, as with any Unix filter."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (captured in tests): nothing to flush there
        pass
    return EXIT_CLOSED_STDOUT


def run_command(func: Callable[[], int | None], *,
                interrupted: str = "finished results are kept, rerun to resume") -> int:
    """Run a command body and map errors to the CLI contract: one line and status 2 for bad input, 130 for
    Ctrl-C and 143 for SIGTERM (one line; see :func:`sigterm_as_interrupt`), the body's status otherwise. idtfv's
    warnings are one ``warning:`` line each. ``interrupted`` ends the line printed on Ctrl-C or SIGTERM (what is
    kept)."""
    try:
        with one_line_warnings():
            return int(func() or 0)
    except (IdtfvError, OSError) as exc:
        print(error_line(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # a failed allocation (NumPy's MemoryError, OpenCV's cv2.error); anything else is a bug
        if not is_out_of_memory(exc):
            raise
        print(error_line(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"{what}; {interrupted}", file=sys.stderr)
        return interrupt_status(exc)


# ----------------------------------------------------------------------------------------------- shared helpers
def add_runner_options(parser: argparse.ArgumentParser, *, jobs_default: int = 1) -> None:
    """Add the runner options every per-video stage shares: ``--jobs``, ``--scheduler``, ``--force``,
    ``--allow-failed``."""
    group = parser.add_argument_group("execution")
    group.add_argument("--jobs", type=int, default=jobs_default, metavar="J",
                       help=f"local worker processes, -1 = all cores; capped at the cores, at least 2 "
                            f"(default {jobs_default})")
    group.add_argument("--scheduler", default=None, metavar="ADDR",
                       help="Dask scheduler address (tcp://127.0.0.1:8786) to run on instead of local processes; "
                            "a scheduler reachable from a network needs TLS (tls://, docs/DASK.md)")
    group.add_argument("--force", action="store_true", help="recompute videos that already have a result")
    group.add_argument("--allow-failed", action="store_true",
                       help="exit with status 0 even if some videos failed (they are listed in the index)")


def _summarise(stage: str, what: str, items: Mapping[str, str], index, stream) -> None:
    """One ``warning:`` line for ``items`` ({video_id: message}) of a stage run, naming the first few."""
    if not items:
        return
    shown = list(items.items())[:3]
    listed = "; ".join(f"{vid}: {message}" for vid, message in shown)
    more = f"; ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    n = len(items)
    print(f"warning: {stage}: {n} video{'s' if n != 1 else ''} {what} (see {index}): {listed}{more}", file=stream)


def report_failures(stage: str, result, *, allow_failed: bool, stream=None) -> int:
    """Print the summary of a stage run; return the exit status (1 if videos failed and not ``allow_failed``).

    Videos with an empty result (``result.empty``, e.g. no trajectory) and videos computed with notes
    (``result.notes``, e.g. a truncated file) each get one ``warning:`` line; they do not change the status.
    """
    stream = sys.stderr if stream is None else stream
    empty = dict(getattr(result, "empty", {}) or {})
    notes = dict(getattr(result, "notes", {}) or {})
    total = len(result.video_ids) or len(result.done) + len(result.skipped) + len(result.failed) + len(empty)
    print(f"{stage}: {len(result.done)} computed, {len(result.skipped)} already done, "
          + (f"{len(empty)} empty, " if empty else "")
          + f"{len(result.failed)} failed of {total} videos -> {result.dir}", file=sys.stdout)
    index = result.dir / "index.csv"
    _summarise(stage, "with an empty result, left out of the next stages", empty, index, stream)
    _summarise(stage, "with warnings", notes, index, stream)
    if not result.failed:
        return 0
    print(f"{stage}: {len(result.failed)} of {total} videos failed (see {result.dir / 'index.csv'}):", file=stream)
    for video_id, message in list(result.failed.items())[:_MAX_LISTED_FAILURES]:
        print(f"  {video_id}: {message}", file=stream)
    if len(result.failed) > _MAX_LISTED_FAILURES:
        print(f"  ... and {len(result.failed) - _MAX_LISTED_FAILURES} more", file=stream)
    if allow_failed:
        return 0
    if len(result.failed) == total and total > 1 and len(set(result.failed.values())) == 1:
        # one cause for all (an option, the installation, the disk): retrying changes nothing
        print(f"{stage}: every video failed with the same error; fix its cause (above) before rerunning",
              file=stream)
    else:
        print(f"{stage}: rerun to retry the failed videos, or pass --allow-failed to accept them", file=stream)
    return EXIT_FAILED_VIDEOS


# ----------------------------------------------------------------------------------------------- idtfv dataset
def add_dataset(subparsers) -> None:
    """Add ``idtfv dataset``: write a manifest (the synthetic default set, UCF101, HMDB51, a folder, a CSV)."""
    p = subparsers.add_parser(
        "dataset", help="write a dataset manifest (the synthetic default set, UCF101, HMDB51, a folder, a CSV)",
        description="Build, probe and write a manifest CSV. --kind default generates the built-in synthetic "
                    "dataset (video files) into the directory of --out.")
    p.add_argument("--kind", choices=_DATASET_KINDS, default="default", help="dataset kind (default: default)")
    p.add_argument("--root", type=Path, default=None,
                   help="dataset root: the video tree (ucf101/hmdb51/folder) or the CSV file (csv)")
    p.add_argument("--split-file", type=Path, default=None,
                   help="folder: a split file (<relpath> train|test lines; default a seeded group-aware split); "
                        "ucf101/hmdb51: the directory of the official split lists (default: found under --root)")
    p.add_argument("--seed", type=int, default=0, help="random seed (synthetic clips, seeded splits)")
    p.add_argument("--jobs", type=int, default=1, metavar="J", help="processes for the probe pass (default 1)")
    p.add_argument("--out", type=Path, required=True, metavar="MANIFEST.csv", help="manifest to write")
    p.set_defaults(func=_cmd_dataset)


@contextlib.contextmanager
def _data_warnings():
    """The dataset readers' logged warnings as ``warning: ...`` lines on stderr; the per-video probe failures are
    left to the one summary line of :func:`_cmd_dataset`."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    handler.addFilter(lambda record: not record.getMessage().startswith("probe failed"))
    logger = logging.getLogger("idtfv.data")
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _output_directory(out: Path) -> None:
    """Create the directory of the output file ``out``, or raise a :class:`ParameterError` naming ``--out``, the part
    of its path that is a file (or the OS's reason) and how to fix it (:func:`idtfv.atomic.make_directory`)."""
    from idtfv.atomic import make_directory

    try:
        make_directory(out.parent, fix="give an --out in a writable directory (make: another CACHE)")
    except DiskFullError:
        raise
    except IdtfvError as exc:
        raise ParameterError(f"--out {out}: {exc}") from None


def _cmd_dataset(args) -> int:
    with _data_warnings():
        return _dataset(args)


def _dataset(args) -> int:
    from idtfv.data.manifest import probe_manifest, read_manifest, write_manifest

    out = args.out
    if args.seed < 0:  # NumPy's generators take non-negative seeds only (a ValueError traceback before)
        raise ParameterError(f"--seed must be a non-negative integer, got {args.seed}")
    check_jobs(args.jobs, name="--jobs")  # before the dataset is generated or read (joblib's traceback before)
    if args.kind == "default":
        given = [name for name, value in (("--root", args.root), ("--split-file", args.split_file)) if value is not None]
        if given:  # e.g. `make features ROOT=...` without DATASET=: not the synthetic set the user would get
            raise ParameterError(
                f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} not used by --kind default (the "
                f"built-in synthetic set); give the dataset's kind with it: --kind folder (a video tree), ucf101, "
                f"hmdb51 or csv (make: DATASET=folder ROOT=...)")
        from idtfv.data.synthetic import generate_dataset

        _output_directory(out)
        written = Path(generate_dataset(out.parent.resolve(), random_state=args.seed))
        if written.resolve() != out.resolve():
            write_manifest(read_manifest(written), out)
        manifest = read_manifest(out)
    else:
        if args.root is None:
            raise ParameterError(f"--kind {args.kind} needs --root (the dataset directory or CSV file; make: "
                                 f"DATASET={args.kind} ROOT=PATH)")
        from idtfv.data import build_manifest

        manifest = build_manifest(args.kind, args.root, split_file=args.split_file, random_state=args.seed)
        _output_directory(out)  # before the probe pass (minutes on a big dataset): an --out under a file says so
        # an existing manifest keeps the probe columns it has; every other kind is probed in full
        manifest = probe_manifest(manifest, jobs=args.jobs, only_missing=args.kind == "csv")
        write_manifest(manifest, out)
        errors = getattr(manifest, "probe_errors", {}) or {}
        if errors:
            first = next(iter(errors.items()))
            print(f"warning: {len(errors)} video{'s' if len(errors) != 1 else ''} could not be probed (first: "
                  f"{first[0]}: {first[1]}); "
                  "they will fail in the features stage", file=sys.stderr)
        notes = getattr(manifest, "probe_warnings", {}) or {}
        if notes:
            first = next(iter(notes.values()))
            n = len(notes)
            print(f"warning: {n} video{'s' if n != 1 else ''} decode{'s' if n == 1 else ''} a different number of "
                  f"frames than their header declares (first: {first}); only the decodable frames are used",
                  file=sys.stderr)
    line = _untrained_classes(manifest)
    if line:
        print(line, file=sys.stderr)
    print(f"dataset: {len(manifest.rows)} videos, {len(manifest.class_names)} classes -> {out}")
    return 0


def _untrained_classes(manifest) -> str | None:
    """One ``warning:`` line when a split has no training video of some class of the manifest (a seeded split of
    a small folder tree can put a whole class in test: train-svm would stop on it after features and encode)."""
    labelled = sorted({e.label for e in manifest.rows if e.label >= 0})
    affected = {}
    for n in range(1, manifest.n_splits + 1):
        trained = {e.label for e in manifest.split(n, "train")}
        missing = [label for label in labelled if label not in trained]
        if missing:
            affected[n] = missing
    if not affected:
        return None
    n, missing = next(iter(affected.items()))
    names = ", ".join(repr(manifest.class_names[label]) for label in missing[:3]) + (" ..." if len(missing) > 3 else "")
    others = f" (and {len(affected) - 1} more split{'s' if len(affected) > 2 else ''})" if len(affected) > 1 else ""
    return (f"warning: split {n}{others} has no training video of {len(missing)} of {len(labelled)} classes "
            f"({names}); train-svm cannot learn {'it' if len(missing) == 1 else 'them'}: give a split file "
            "(--split-file; make: SPLIT_FILE=FILE) or more videos (groups) per class")


# ----------------------------------------------------------------------------------------------- dispatcher
def command_table() -> dict[str, Callable]:
    """The subcommands: ``{name: add(subparsers)}``, the built-in ones first, then the stages' entry points
    (loaded lazily: the values are callables that import their module when called)."""
    from importlib.metadata import entry_points

    table: dict[str, Callable] = {"dataset": add_dataset}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in table:
            continue  # a second installation of the same command: the first one wins
        table[ep.name] = lambda subparsers, _ep=ep: _ep.load()(subparsers)
    return table


def build_parser(*, commands: Mapping[str, Callable] | None = None,
                 only: str | None = None) -> argparse.ArgumentParser:
    """The ``idtfv`` parser.

    Parameters
    ----------
    commands : mapping of str to callable, optional
        ``{name: add(subparsers)}``; default :func:`command_table`.
    only : str, optional
        Add only this subcommand (when it is known): ``idtfv encode ...`` imports no other stage's module.
    """
    from idtfv import __version__

    table = command_table() if commands is None else dict(commands)
    parser = OneLineParser(
        prog="idtfv",
        description="Improved dense trajectories -> Fisher vectors -> linear SVM, and CNN baselines, over a "
                    "dataset manifest. Each subcommand is one resumable pipeline stage.",
        epilog="Bad input exits with status 2; a stage with failed videos exits with status 1.")
    parser.add_argument("--version", action="version", version=f"idtfv {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=SubcommandParser)
    names = [only] if only in table else list(table)
    for name in names:
        table[name](subparsers)
    return parser


_quick_exit = False


def quick_exit() -> None:
    """Make this process's exit skip the cyclic garbage collector's passes over the objects alive at exit.

    Python's shutdown otherwise walks every object Numba, NumPy and OpenCV made: about 0.15 s of CPU after an
    extraction (``bench/bench_startup.py``), spent after the output is written. Registers :func:`gc.freeze` with
    :mod:`atexit` (once; it runs after the handlers registered later, e.g. temporary directories' clean-up).
    Finalizers of objects outside reference cycles still run, and commands close their files before returning.
    """
    global _quick_exit
    if not _quick_exit:
        _quick_exit = True
        atexit.register(gc.freeze)


@contextlib.contextmanager
def imports_without_gc():
    """Pause the cyclic garbage collector inside, and leave what was made so far out of its later passes (restored on
    the way out, also on an error).

    The import of the extractor (Numba, NumPy, OpenCV and the kernels' modules) makes ~80,000 objects that live for
    the whole run; each allocation threshold crossed meanwhile starts a collection over them that frees nothing
    (~180 collections, 0.04-0.08 s of the 0.3 s import on the 2-core test machine, ``bench/bench_startup.py``).
    Re-enabled as it was, the collector would still walk them all once or twice more: the objects made while it
    was off sit in its youngest generation, so its first pass after covers them all (14 ms), and a later one the
    next generation (16 ms, at a kernel module imported with the first frame); ~0.03 s before the first frame,
    measured with :data:`gc.callbacks` on ``extract-trajectories``. So on the way out the objects alive are moved to
    the collector's permanent generation (:func:`gc.freeze`): never collected, never walked again; garbage made
    from then on is collected as before.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.enable()


#: OpenCV's variable for the size of its thread pool, read when ``cv2`` is imported.
OPENCV_THREADS_ENV = "OPENCV_FOR_THREADS_NUM"


def sequential_opencv() -> None:
    """Keep OpenCV's own thread pool off in this command and in the worker processes it starts.

    idtfv's parallelism is its own and one level deep: ``--jobs`` worker processes, or ``--threads`` threads of
    one extraction, so that N means N cores. OpenCV would otherwise run a pool of one thread per core inside each of
    them (AKAZE, resizing, remapping), K workers x cores threads in a dataset run. ``bench/bench_opencv_pool.py``
    (``## opencv-pool`` of ``bench/RESULTS.md``) races both on the whole vtest clip on a 2-core machine: the pool
    makes one extraction 3% faster in wall time for 7% more CPU, and two extractions side by side (a 2-worker
    run) take the same time either way. Sets the variable (inherited by worker processes, read when they import
    OpenCV) unless the user set it, and tells an OpenCV already imported in this process.
    """
    if os.environ.setdefault(OPENCV_THREADS_ENV, "1") == "1" and "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(1)


def main(argv: list[str] | None = None, *, commands: Mapping[str, Callable] | None = None) -> int:
    """Entry point of the ``idtfv`` console script; returns the exit status."""
    quick_exit()
    sequential_opencv()
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    try:
        parser = build_parser(commands=commands, only=first)
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a bad option (2, one line already printed)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_BAD_INPUT
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    tune_heap()  # only for a run: --help and bad options need no heap reserve
    with sigterm_as_interrupt():  # SIGTERM / SIGHUP unwind like Ctrl-C: temporary outputs are removed
        return run_command(lambda: func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
