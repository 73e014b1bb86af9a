"""The extractor package's commands: ``extract-trajectories VIDEO``, ``extract-flow VIDEO``, and ``idtfv features``
and ``idtfv flow`` (every video of a manifest).

Thin shells over :func:`idtfv.idt.extract` and :mod:`idtfv.idt.stage`. Bad input (missing or non-video file, a
1-frame video, a bad option) prints one ``error: ...`` line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from idtfv.allocator import tune_heap
from idtfv.atomic import (check_replaceable, disk_full_error, prepare_output_file, remove_stale_temps, temp_name,
                          writer_tag)
from idtfv.cli import (OneLineParser, Terminated, add_runner_options, closed_stdout, error_line, imports_without_gc,
                       interrupt_once, interrupt_status, is_out_of_memory, quick_exit, report_failures, run_command,
                       sequential_opencv)
from idtfv.errors import EXIT_BAD_INPUT, DiskFullError, IdtfvError, ParameterError, exception_text
from idtfv.idt.params import PRESETS, IDTParams
from idtfv.jit import import_numba
from idtfv.options import add_params_options, params_from_args

__all__ = ["build_parser", "main", "add_features", "build_flow_parser", "flow_main", "add_flow", "add_flow_options",
           "TRAJECTORY_FIELDS", "FEATURES_FIELDS"]

#: The IDTParams fields ``extract-trajectories`` offers as options: all of them.
TRAJECTORY_FIELDS = tuple(f.name for f in dataclasses.fields(IDTParams))
#: The IDTParams fields ``idtfv features`` offers: all but the per-video ones (frame range, box file), the
#: humans-box cache directory (a place, not a result-affecting choice) and ``threads`` (the runner parallelises
#: over videos, one thread each).
FEATURES_FIELDS = tuple(name for name in TRAJECTORY_FIELDS
                        if name not in ("start", "end", "boxes", "humans_cache", "threads"))
_PRESET_HELP = ("default = LEAR's reference settings; fast = one flow pass, flow-match homography, cheaper "
                "Farneback (IDTParams.fast); the options below change single settings of the preset")


def _add_extractor_options(parser: argparse.ArgumentParser, fields: tuple[str, ...], helps=None) -> None:
    g = parser.add_argument_group("extractor options (IDTParams)")
    g.add_argument("--preset", choices=tuple(PRESETS), default="default", help=_PRESET_HELP)
    add_params_options(parser, IDTParams, fields=fields, presets=PRESETS, group=g,
                       advanced_title="advanced extractor options (IDTParams; LEAR DenseTrackStab's internals)",
                       helps=helps)


def _idt_params(args, fields: tuple[str, ...]) -> IDTParams:
    """The extractor parameters of ``--preset`` and the options the user gave."""
    return params_from_args(args, IDTParams, fields=fields, preset=PRESETS[args.preset])


def _check_runtime(params: IDTParams) -> None:
    """Fail before any work when ``--device cuda`` has no CUDA device (and warn once for ``auto``), or when the
    camera's keypoints (``--matcher``) are not in this OpenCV build."""
    if params.device != "cpu":
        from idtfv.idt.device import resolve_device

        resolve_device(params.device)
    if params.camera_motion:
        from idtfv.idt.camera import resolve_matcher

        resolve_matcher(params.matcher)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="extract-trajectories",
                description="Extract improved dense trajectories (Wang & Schmid 2013) with HOG/HOF/MBH descriptors.")
    p.add_argument("video", help="input video file")
    p.add_argument("-o", "--output", help="output file, NAME.npz or NAME.txt / NAME.txt.gz for LEAR text (default: "
                                          "VIDEO's name with .npz, or .txt.gz for --format lear, in the current "
                                          "directory); '-' writes LEAR text to stdout")
    p.add_argument("--format", choices=("npz", "lear"), default=None,
                   help="npz (compressed arrays, default) or lear (436 tab-separated columns per trajectory; "
                        "written as it is extracted; a .txt.gz name is gzipped with Huffman coding only, no string "
                        "matching: the fastest mode, ~4%% larger than level 1 on LEAR text)")
    p.add_argument("--full-precision", action="store_true",
                   help="npz: store descriptors as float32 instead of the default float16 (half the size, "
                        "loaded back as float32)")
    p.add_argument("--draw", metavar="TRACKS.mp4", help="also render the tracks over the video to this file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_extractor_options(p, TRAJECTORY_FIELDS)
    return p


_LEAR_SUFFIXES = (".txt", ".txt.gz")


def _output_path(args) -> tuple[Path | None, str]:
    """``(output path or None for stdout, format)`` of the options; a name and ``--format`` that disagree are
    refused (an ``.npz`` name holding text, or a ``.txt`` one holding an npz, would not load back)."""
    fmt = args.format
    if args.output == "-":
        if fmt == "npz":
            raise ParameterError("-o - writes LEAR text to stdout, but --format npz was given; an npz needs a file "
                                 "name (-o NAME.npz), or drop --format npz")
        return None, "lear"
    if args.output:
        if args.output.endswith(("/", os.sep)):
            raise ParameterError(f"-o {args.output}: names a directory; -o takes the output file's name, e.g. "
                                 f"{args.output}{Path(args.video).name.rsplit('.', 1)[0]}.npz")
        out = Path(args.output)
        lear_name = out.name.endswith(_LEAR_SUFFIXES)
        if fmt is None:
            fmt = "lear" if lear_name else "npz"
        elif fmt == "lear" and out.name.endswith(".npz"):
            raise ParameterError(f"-o {out}: an .npz name, but --format lear writes LEAR text; name it "
                                 f"{out.name[:-4]}.txt.gz (or .txt), or drop --format lear")
        elif fmt == "npz" and lear_name:
            raise ParameterError(f"-o {out}: a LEAR text name (.txt / .txt.gz), but --format npz writes an npz; name "
                                 f"it {out.name.rsplit('.txt', 1)[0]}.npz, or drop --format npz")
        return out, fmt
    fmt = fmt or "npz"
    stem = Path(args.video).name.rsplit(".", 1)[0]
    return Path(stem + (".npz" if fmt == "npz" else ".txt.gz")), fmt


def main(argv=None) -> int:
    """Entry point of the ``extract-trajectories`` console script; returns the exit status."""
    global _MAIN_CPU
    _MAIN_CPU = time.process_time()
    quick_exit()
    sequential_opencv()
    # NumPy's OpenBLAS starts a thread per core at import, and they spin after each (tiny, one-thread) BLAS call
    # the extractor makes (3x3 inverses): ~4% more CPU for the same wall time on 2 cores (KTH, default preset).
    # One video's extraction uses no BLAS worth threads; read at NumPy's import, so set before it, unless set.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad option (2, one line already printed)
        return int(e.code or 0)
    tune_heap()  # only for a run: --help and bad options need no heap reserve
    from idtfv.cli import one_line_warnings

    with interrupt_once():  # a second Ctrl-C (or SIGTERM) neither stops the clean-up nor the one line below
        try:
            with one_line_warnings():  # a truncated video: one "warning: ..." line
                return _extract_trajectories(args)
        except (IdtfvError, OSError) as e:
            if isinstance(e, BrokenPipeError) and args.output == "-":
                return closed_stdout()  # -o - | head: the reader has all it wanted; nothing to say (as any filter)
            text = exception_text(e)
            msg = text.splitlines()[0] if text else type(e).__name__
            print(f"error: {msg}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except Exception as e:  # a failed allocation (NumPy's MemoryError, OpenCV's cv2.error); anything else is a bug
            if not is_out_of_memory(e):
                raise
            print(error_line(e, where=str(args.video)), file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated)
            what = "terminated" if isinstance(e, Terminated) else "interrupted"
            left = "the LEAR text on stdout is incomplete" if args.output == "-" else "no output written"
            print(f"{what}; {left}", file=sys.stderr)
            return interrupt_status(e)


def _remove_stage_dir(stage_dir: Path) -> None:
    """Remove the temporary directory of the output and whatever is left in it."""
    import shutil

    shutil.rmtree(stage_dir, ignore_errors=True)


def _same_file(a, b) -> bool:
    """Whether paths ``a`` and ``b`` name the same file (existing or not)."""
    return os.path.realpath(a) == os.path.realpath(b)


def _extract_trajectories(args) -> int:
    """The body of :func:`main` (errors are reported by it)."""
    video = Path(args.video)
    if not video.exists():
        raise IdtfvError(f"{video}: no such file; give the path of a video")
    params = _idt_params(args, TRAJECTORY_FIELDS)
    with imports_without_gc():  # the camera's kernels' modules
        import_numba()  # without SciPy and PyYAML, which it imports for nothing a run uses (idtfv.jit)
        _check_runtime(params)
    out, fmt = _output_path(args)
    if out is None and getattr(sys.stdout, "buffer", None) is None:  # run with stdout closed (>&-)
        raise IdtfvError("-o -: this process has no stdout to write to (it was closed); redirect it to a file or a "
                         "pipe, or give -o FILE")
    if out is not None and not out.parent.exists():
        raise IdtfvError(f"{out}: the output directory {out.parent} does not exist; create it first")
    if out is not None and not out.parent.is_dir():
        raise IdtfvError(f"{out}: {out.parent} is not a directory; -o takes a file name in an existing directory")
    if out is not None and out.is_dir():
        raise IdtfvError(f"{out}: is a directory; -o takes the output file's name, e.g. "
                         f"{out / (video.name.rsplit('.', 1)[0] + ('.npz' if fmt == 'npz' else '.txt.gz'))}")
    if out is not None and not out.name.endswith((".npz", *_LEAR_SUFFIXES)):
        raise ParameterError(f"-o {out}: expected a name ending in .npz, or .txt / .txt.gz for LEAR text "
                             "(load_trajectories and idtfv read a trajectories file by its suffix); e.g. "
                             f"{out.name}.npz")
    if out is not None:  # /dev/null, a FIFO: the rename at the end would replace it
        check_replaceable(out)
    for flag, path in (("-o", out), ("--draw", args.draw)):
        if path is not None and _same_file(path, video):  # the drawing would replace the source video
            raise ParameterError(f"{flag} {path}: the input video itself; give the output its own name")
    if args.draw and out is not None and _same_file(args.draw, out):
        raise ParameterError(f"--draw {args.draw}: the same file as -o {out}; give the drawing its own name, e.g. "
                             f"{out.with_suffix('.tracks.mp4').name}")
    if args.draw:
        check_replaceable(args.draw)
    with imports_without_gc():
        from idtfv.idt.extractor import extract_to_file

    bar = None
    on_frame = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(desc=video.name, unit="frame", file=sys.stderr)

        def on_frame(i, n):
            if n and bar.total != n:  # a header's estimate first, the frames decoded at the end if it was wrong
                bar.total = n
            bar.n = i
            bar.refresh()

    cpu_log = os.environ.get(CPU_LOG_ENV)
    if cpu_log:  # bench/bench_startup.py: the process's CPU seconds at the start of main() and after each frame
        on_frame = _logging_cpu(on_frame, stamps := {"main": _MAIN_CPU, "frames": []})

    drawer = None
    if args.draw:
        from idtfv.idt.draw import TrackDrawer

        from idtfv.video import probe_video

        # plays at the source's rate (the header's: no need to count the frames)
        drawer = TrackDrawer(args.draw, fps=probe_video(video, count_frames=False).fps)
    # trajectories go to the file as they finish (memory does not grow with the video's length); the file
    # appears, complete, only at the end, and under a temporary name first: a video without trajectories must
    # not replace an existing output. The temporary file has the output's own name, in a temporary directory
    # beside it: a .txt.gz stores its name in the gzip header (a random one made the bytes differ run to run)
    # named after this process (writer_tag): the one a killed run left (SIGKILL) is removed by the next run of out
    stage_dir = None if out is None else out.with_name(temp_name(out.name, writer_tag()))
    if out is not None:
        remove_stale_temps(out)
    staged = None if stage_dir is None else stage_dir / out.name
    try:
        if stage_dir is not None:
            try:
                stage_dir.mkdir()
            except OSError as exc:  # named after the output, not the temporary directory
                if disk_full_error(exc) is not None:
                    raise  # named after the output below
                why = exc.strerror.lower() if exc.strerror else str(exc)
                raise IdtfvError(f"{out}: cannot write in {out.parent} ({why}); -o a file in a directory you can "
                                 "write to") from None
        writer = extract_to_file(video, sys.stdout.buffer if out is None else staged, params, format=fmt,
                                 compact=fmt == "npz" and not args.full_precision, on_frame=on_frame,
                                 on_tracks=drawer)
        if staged is not None:
            if writer.n_rows:
                os.replace(staged, out)
            _remove_stage_dir(stage_dir)
        if drawer is not None:  # the whole video was drawn: it goes in place (with or without trajectories)
            drawer.close()
    except BaseException as exc:
        if stage_dir is not None:
            _remove_stage_dir(stage_dir)
        if drawer is not None:  # no partial drawing is left
            drawer.abort()
        full = disk_full_error(exc)
        if full is not None and full.path in ("?", os.fspath(staged) if staged is not None else "?"):
            # a failed write names no file, or the temporary one: name the output the user asked for
            raise DiskFullError("<stdout>" if out is None else out, full.errno) from exc
        raise
    finally:
        if bar is not None:
            bar.close()
    if writer.n_rows == 0:  # nothing to use: say why, and leave no output that looks like a result
        from idtfv.errors import VideoError
        from idtfv.idt.stage import empty_reason

        raise VideoError(video, f"no trajectories: {empty_reason(writer.info.get('frames'), params)}")
    if out is not None and not args.quiet:
        print(f"{writer.n_rows} trajectories from {writer.info.get('frames')} frames -> {out}", file=sys.stderr)
    if cpu_log:
        import json

        stamps["end"] = time.process_time()  # the output written and renamed
        Path(cpu_log).write_text(json.dumps(stamps))
    return 0


#: Environment variable naming a JSON file where ``extract-trajectories`` records its process CPU seconds
#: (``time.process_time()``, all threads) at the start of :func:`main` (``"main"``: the interpreter and the
#: console script's imports), after each frame (``"frames"``: the first one after the first frame's pyramid,
#: flow expansion, keypoints and sampling) and once the output is written (``"end"``); ``bench/bench_startup.py``
#: measures the start-up with it.
CPU_LOG_ENV = "IDTFV_CPU_LOG"
_MAIN_CPU = 0.0


def _logging_cpu(on_frame, stamps: dict):
    def logged(i, n):
        stamps["frames"].append(time.process_time())
        if on_frame is not None:
            on_frame(i, n)

    return logged


# ----------------------------------------------------------------------------------------------- idtfv features
def add_features(subparsers) -> None:
    """Add ``idtfv features``: improved dense trajectories of every video of a manifest (resumable)."""
    p = subparsers.add_parser(
        "features", help="extract improved dense trajectories of every video of a manifest (resumable)",
        description="Run the features stage: one CACHE/features-<hash>/<video_id>.npz per video, then write the "
                    "stage stamp JSON {stage, dir, params, done, failed}. With --store sample (the streaming "
                    "mode) each file keeps only a seeded sample of the video's descriptors, for idtfv encode "
                    "--streaming.")
    p.add_argument("--manifest", type=Path, required=True, help="manifest CSV")
    p.add_argument("--cache", type=Path, required=True, help="cache directory holding the stage directories")
    p.add_argument("--out", type=Path, required=True, metavar="STAMP.json", help="stage stamp to write")
    add_runner_options(p)
    _add_extractor_options(p, FEATURES_FIELDS, helps={
        "seed": "random seed (RANSAC, and the --store sample rows)"})
    from idtfv.idt.gpu_worker import GpuWorkerOptions

    add_params_options(p, GpuWorkerOptions, title="GPU worker (--device cuda; see docs/GPU.md)")
    st = p.add_argument_group("streaming mode (see idtfv encode --streaming)")
    st.add_argument("--store", choices=("all", "sample"), default="all",
                    help="all = every descriptor of every video (default); sample = only a seeded sample of each "
                         "video's descriptors, for fitting the codebook (the raw descriptors are never stored)")
    st.add_argument("--sample-per-video", type=int, default=None, metavar="N",
                    help="with --store sample: rows kept per video (default 1000)")
    st.add_argument("--subset", type=float, default=None, metavar="FRACTION",
                    help="with --store sample: extract only a seeded, class-stratified FRACTION of the split's "
                         "training videos (e.g. 0.1)")
    st.add_argument("--split", type=int, default=1,
                    help="with --subset: the split whose training videos are drawn from (default 1)")
    p.set_defaults(func=_cmd_features)


#: Per-video function of each features mode; tests may substitute their own (a module-level function).
STAGE_FUNCS: dict = {}


def _cmd_features(args) -> int:
    from idtfv.data.manifest import read_manifest
    from idtfv.idt.stage import run_features
    from idtfv.runner import write_stamp
    from idtfv.sampling import DEFAULT_SAMPLE_PER_VIDEO, training_subset

    from idtfv.idt.gpu_worker import GpuWorkerOptions

    idt_params = _idt_params(args, FEATURES_FIELDS)
    _check_runtime(idt_params)
    gpu = params_from_args(args, GpuWorkerOptions)
    for flag, value in (("--gpu-streams", args.gpu_streams), ("--host-threads", args.host_threads)):
        if value is not None and idt_params.device == "cpu":
            raise ParameterError(f"{flag} {value} needs --device cuda (or auto); the CPU run parallelises over "
                                 "videos with --jobs instead")
    params = {"idt": idt_params.to_dict()}
    manifest = read_manifest(args.manifest)
    entries = manifest.rows
    prepare_output_file(args.out, fix="give an --out in a writable directory (make: another CACHE)")  # before the work
    if args.store == "all":
        for option, value in (("--sample-per-video", args.sample_per_video), ("--subset", args.subset)):
            if value is not None:
                raise ParameterError(f"{option} needs --store sample (got --store all); add --store sample for the "
                                     "streaming mode or drop the option")
    else:
        n_keep = DEFAULT_SAMPLE_PER_VIDEO if args.sample_per_video is None else args.sample_per_video
        if n_keep < 1:
            raise ParameterError(f"--sample-per-video must be >= 1 rows, got {n_keep}")
        # a new stage directory (different parameters); the subset only picks which videos are run
        params = {**params, "store": "sample", "sample_per_video": int(n_keep),
                  "sample_seed": int(params["idt"]["seed"])}
        if args.subset is not None:
            entries = training_subset(entries, args.subset, split=args.split, seed=params["sample_seed"])
    result = run_features(entries, params, cache_root=args.cache, jobs=args.jobs, scheduler=args.scheduler,
                          force=args.force, func=STAGE_FUNCS.get(args.store), gpu=gpu)
    if args.subset is not None:  # recorded in the stamp only: the stage directory does not depend on it
        params = {**params, "subset": {"fraction": float(args.subset), "split": int(args.split)}}
    write_stamp(args.out, result, stage="features", params=params)
    return report_failures("features", result, allow_failed=args.allow_failed)


# ----------------------------------------------------------------------------------------------- extract-flow, idtfv flow
def add_flow_options(parser: argparse.ArgumentParser) -> None:
    """The flow options shared by ``extract-flow`` and ``idtfv flow``: the fields of
    :class:`~idtfv.idt.flow_options.FlowOptions`."""
    # imported here for start-up time: FlowOptions' defaults load OpenCV and NumPy (rawframes, the flow methods),
    # which extract-trajectories and idtfv features do not need
    from idtfv.idt.flow_options import FlowOptions

    add_params_options(parser, FlowOptions, title="flow options (FlowOptions)")


def _options(args) -> dict:
    """The flow options the user gave, validated, as :func:`~idtfv.idt.stage.extract_video`'s keyword arguments."""
    from idtfv.idt.flow_options import FlowOptions

    return params_from_args(args, FlowOptions).to_dict()


def build_flow_parser() -> argparse.ArgumentParser:
    """The ``extract-flow`` parser."""
    p = OneLineParser(
        prog="extract-flow",
        description="Optical flow of a video as mmaction2/TSN rawframes: DIR/<video_id>/img_00001.jpg, "
                    "flow_x_00001.jpg, flow_y_00001.jpg (T frames -> T-1 flow pairs), or a float16 .npz.")
    p.add_argument("video", type=Path, help="input video")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.add_argument("--video-id", default=None, help="name of the output (default: the video's file stem)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar (there is none when stderr is not a "
                                                              "terminal either)")
    add_flow_options(p)
    return p


def _frame_bar(name: str, *, quiet: bool):
    """``(bar, on_frame)``: a tqdm frame bar on stderr and the ``on_frame(i, n)`` callback that moves it, or
    ``(None, None)`` with ``quiet`` or when stderr is not a terminal (logs and pipes get no bar)."""
    if quiet or not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm

    bar = tqdm(desc=name, unit="frame", file=sys.stderr)

    def on_frame(i, n):
        if bar.total is None and n:
            bar.total = n
        bar.n = i
        bar.refresh()

    return bar, on_frame


def flow_main(argv: list[str] | None = None) -> int:
    """Entry point of ``extract-flow``; returns the exit status."""
    sequential_opencv()
    try:
        args = build_flow_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad option (2, one line already printed)
        return int(exc.code or 0)
    tune_heap()  # only for a run

    def body():
        from idtfv.idt.stage import extract_video

        if args.out.exists() and not args.out.is_dir():
            raise IdtfvError(f"{args.out}: exists and is not a directory; -o takes the output directory "
                             "(created if missing)")
        options = _options(args)  # bad options fail before the bar appears
        bar, on_frame = _frame_bar(args.video.name, quiet=args.quiet)
        try:
            info = extract_video(args.video, args.out, video_id=args.video_id, on_frame=on_frame, **options)
        finally:
            if bar is not None:
                bar.close()
        try:  # the rawframes are in place: a reader gone from stdout (| head) is no failure of the command
            print(f"extract-flow: {int(info['n_frames'])} frames, {int(info['n_flows'])} flows "
                  f"({int(info['width'])}x{int(info['height'])}) -> {args.out}", flush=True)
        except BrokenPipeError:
            return closed_stdout()
        except OSError as exc:
            full = disk_full_error(exc)
            if full is not None:
                raise DiskFullError("<stdout>", full.errno) from exc
            raise

    with interrupt_once():  # SIGTERM too removes the partial rawframes directory; a second Ctrl-C does not stop that
        return run_command(body, interrupted="no output written (an earlier output of the video is left as it was)")


def add_flow(subparsers) -> None:
    """Add ``idtfv flow`` (rawframes of every video of a manifest, through the stage runner)."""
    p = subparsers.add_parser(
        "flow", help="optical flow of every video of a manifest as rawframes (resumable)",
        description="Run extract-flow over a manifest: DIR/<video_id>/ rawframes (or DIR/<video_id>.npz) per "
                    "video; the runner's index and per-video records go to CACHE/flow-<hash>/.")
    p.add_argument("--manifest", type=Path, required=True, help="manifest CSV")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="rawframes output directory")
    p.add_argument("--cache", type=Path, default=None, help="cache directory for the runner (default DIR/.cache)")
    add_runner_options(p)
    add_flow_options(p)
    p.set_defaults(func=_cmd_flow)


def _cmd_flow(args) -> int:
    from idtfv.data.manifest import read_manifest
    from idtfv.idt.stage import run_flow

    manifest = read_manifest(args.manifest)
    options = _options(args)
    cache = args.cache if args.cache is not None else args.out / ".cache"
    result = run_flow(manifest.rows, options, out=args.out, cache_root=cache, jobs=args.jobs,
                      scheduler=args.scheduler, force=args.force)
    return report_failures("flow", result, allow_failed=args.allow_failed)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
