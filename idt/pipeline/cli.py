"""The ``idtfv`` command: one argparse program whose subcommands are the pipeline stages.

Built in here: ``idtfv dataset`` (write a manifest) and ``idtfv features`` (improved dense trajectories of every
video, through :func:`idt.pipeline.runner.run_stage`). Packages add their own subcommands by exposing
``register(subparsers)`` in :data:`PLUGIN_MODULES` (each subparser sets ``func=``, a function of the parsed
arguments returning an exit status or None). A plugin module that does not exist yet is skipped; one that exists
but fails to import shows its error.

Every subcommand reports bad input (:class:`~idt.errors.IdtfvError`, ``OSError``) as one ``error: ...`` line on
stderr and exits with status 2. A stage run in which some videos failed prints a summary and exits with status 1,
unless ``--allow-failed`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

from idt.errors import EXIT_BAD_INPUT, IdtfvError, ParameterError

__all__ = ["main", "build_parser", "PLUGIN_MODULES", "STAGE_FUNCS", "EXIT_FAILED_VIDEOS"]

#: Modules whose ``register(subparsers)`` adds subcommands, in help order.
PLUGIN_MODULES = ("idt.flow.cli", "encoding.cli", "classify.cli", "deep.cli")
#: Which plugin module owns a known subcommand, so that ``idtfv encode ...`` imports only ``encoding.cli``.
#: An unknown command (or ``--help``) imports every plugin module.
_COMMAND_MODULES = {
    "flow": "idt.flow.cli",
    "encode": "encoding.cli",
    "train-svm": "classify.cli",
    "train-knn": "classify.cli",
    "evaluate": "classify.cli",
    "fuse": "classify.cli",
    "train-deep": "deep.cli",
}
#: Exit status of a stage run in which some videos failed (without ``--allow-failed``).
EXIT_FAILED_VIDEOS = 1
#: Stage functions by stage name (module-level, shipped to workers); tests may substitute their own.
STAGE_FUNCS = {"features": "idt.pipeline.stages:features_item",
               "features_sample": "idt.pipeline.stages:features_sample_item"}
_DATASET_KINDS = ("default", "ucf101", "hmdb51", "folder", "csv")
_MAX_LISTED_FAILURES = 10


# ----------------------------------------------------------------------------------------------- shared helpers
def _stage_func(stage: str):
    func = STAGE_FUNCS[stage]
    if isinstance(func, str):
        module, _, name = func.partition(":")
        func = getattr(importlib.import_module(module), name)
    return func


def add_runner_options(parser: argparse.ArgumentParser, *, jobs_default: int = 1) -> None:
    """Add the runner options every per-video stage shares: ``--jobs``, ``--scheduler``, ``--force``,
    ``--allow-failed``. Plugins may call this to stay consistent."""
    group = parser.add_argument_group("execution")
    group.add_argument("--jobs", type=int, default=jobs_default, metavar="J",
                       help=f"local worker processes, -1 = all cores (default {jobs_default})")
    group.add_argument("--scheduler", default=None, metavar="ADDR",
                       help="Dask scheduler address (tcp://host:8786) to run on instead of local processes")
    group.add_argument("--force", action="store_true", help="recompute videos that already have a result")
    group.add_argument("--allow-failed", action="store_true",
                       help="exit with status 0 even if some videos failed (they are listed in the index)")


def report_failures(stage: str, result, *, allow_failed: bool, stream=None) -> int:
    """Print the summary of a stage run; return the exit status (1 if videos failed and not ``allow_failed``)."""
    stream = sys.stderr if stream is None else stream
    total = len(result.video_ids) or len(result.done) + len(result.skipped) + len(result.failed)
    print(f"{stage}: {len(result.done)} computed, {len(result.skipped)} already done, "
          f"{len(result.failed)} failed of {total} videos -> {result.dir}", file=sys.stdout)
    if not result.failed:
        return 0
    print(f"{stage}: {len(result.failed)} of {total} videos failed (see {result.dir / 'index.csv'}):", file=stream)
    for video_id, message in list(result.failed.items())[:_MAX_LISTED_FAILURES]:
        print(f"  {video_id}: {message}", file=stream)
    if len(result.failed) > _MAX_LISTED_FAILURES:
        print(f"  ... and {len(result.failed) - _MAX_LISTED_FAILURES} more", file=stream)
    if allow_failed:
        return 0
    print(f"{stage}: rerun to retry the failed videos, or pass --allow-failed to accept them", file=stream)
    return EXIT_FAILED_VIDEOS


# ----------------------------------------------------------------------------------------------- idtfv dataset
def _add_dataset(subparsers) -> None:
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


def _cmd_dataset(args) -> int:
    from idt.data.manifest import probe_manifest, read_manifest, write_manifest

    out = args.out
    if args.kind == "default":
        from idt.data.synthetic import generate_dataset

        out.parent.mkdir(parents=True, exist_ok=True)
        written = Path(generate_dataset(out.parent.resolve(), random_state=args.seed))
        if written.resolve() != out.resolve():
            write_manifest(read_manifest(written), out)
        manifest = read_manifest(out)
    else:
        if args.root is None:
            raise ParameterError(f"--kind {args.kind} needs --root (the dataset directory or CSV file)")
        from idt.data import build_manifest

        manifest = build_manifest(args.kind, args.root, split_file=args.split_file, random_state=args.seed)
        # an existing manifest keeps the probe columns it has; every other kind is probed in full
        manifest = probe_manifest(manifest, jobs=args.jobs, only_missing=args.kind == "csv")
        out.parent.mkdir(parents=True, exist_ok=True)
        write_manifest(manifest, out)
        errors = getattr(manifest, "probe_errors", {}) or {}
        if errors:
            first = next(iter(errors.items()))
            print(f"warning: {len(errors)} videos could not be probed (first: {first[0]}: {first[1]}); "
                  "they will fail in the features stage", file=sys.stderr)
    print(f"dataset: {len(manifest.rows)} videos, {len(manifest.class_names)} classes -> {out}")
    return 0


# ----------------------------------------------------------------------------------------------- idtfv features
def _add_features(subparsers) -> None:
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
    g = p.add_argument_group("extractor options (see IDTParams)")
    g.add_argument("--preset", choices=("default", "fast"), default="default",
                   help="default = reference (LEAR) settings; fast = flow-match homography, one flow pass, "
                        "cheaper Farnebäck (see IDTParams.fast)")
    g.add_argument("--flow", choices=("farneback", "tvl1", "dis"), default=None,
                   help="optical flow (default: the preset's)")
    g.add_argument("--resize-width", type=int, default=None, metavar="W",
                   help="resize frames wider than W pixels to width W, keeping the aspect (e.g. 320)")
    g.add_argument("--seed", type=int, default=None,
                   help="random seed (RANSAC, and the --store sample rows); default: the preset's")
    st = p.add_argument_group("streaming mode (see encoding.streaming and idtfv encode --streaming)")
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


def features_params(*, preset: str = "default", flow: str | None = None, resize_width: int | None = None,
                    seed: int | None = None) -> dict:
    """The features stage parameters ``{"idt": IDTParams.to_dict()}`` for these command-line choices."""
    from idt.params import IDTParams

    params = IDTParams() if preset == "default" else IDTParams.fast()
    changes = {key: value for key, value in (("flow", flow), ("resize_width", resize_width), ("seed", seed))
               if value is not None}
    if changes:
        params = params.replace(**changes)
    return {"idt": params.to_dict()}


def _cmd_features(args) -> int:
    from idt.data.manifest import read_manifest
    from idt.pipeline.runner import run_stage, write_stamp

    manifest = read_manifest(args.manifest)
    params = features_params(preset=args.preset, flow=args.flow, resize_width=args.resize_width, seed=args.seed)
    entries = manifest.rows
    if args.store == "all":
        for option, value in (("--sample-per-video", args.sample_per_video), ("--subset", args.subset)):
            if value is not None:
                raise ParameterError(f"{option} needs --store sample (got --store all); add --store sample for the "
                                     "streaming mode or drop the option")
        func = _stage_func("features")
    else:
        from encoding.streaming import DEFAULT_SAMPLE_PER_VIDEO, training_subset

        n_keep = DEFAULT_SAMPLE_PER_VIDEO if args.sample_per_video is None else args.sample_per_video
        if n_keep < 1:
            raise ParameterError(f"--sample-per-video must be >= 1 rows, got {n_keep}")
        # a new stage directory (different parameters); the subset only picks which videos are run
        params = {**params, "store": "sample", "sample_per_video": int(n_keep),
                  "sample_seed": int(params["idt"]["seed"])}
        if args.subset is not None:
            entries = training_subset(entries, args.subset, split=args.split, seed=params["sample_seed"])
        func = _stage_func("features_sample")
    if args.jobs != 1 and args.scheduler is None and len(entries) > 1:
        from idt.pipeline import stages

        if func in (stages.features_item, stages.features_sample_item):
            stages.warmup_features(params)  # compile the kernels once, not once per worker at the same time
    result = run_stage("features", func, entries, params=params, cache_root=args.cache,
                       jobs=args.jobs, scheduler=args.scheduler, force=args.force)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.subset is not None:  # recorded in the stamp only: the stage directory does not depend on it
        params = {**params, "subset": {"fraction": float(args.subset), "split": int(args.split)}}
    write_stamp(args.out, result, stage="features", params=params)
    return report_failures("features", result, allow_failed=args.allow_failed)


# ----------------------------------------------------------------------------------------------- dispatcher
def _load_plugins(modules) -> list:
    loaded = []
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # the parent package itself is missing
            spec = None
        if spec is None:
            continue
        loaded.append(importlib.import_module(name))  # an existing module that fails to import shows its error
    return loaded


def build_parser(*, modules=PLUGIN_MODULES) -> argparse.ArgumentParser:
    """The ``idtfv`` parser with the built-in subcommands and those of the given plugin modules."""
    import idt

    parser = argparse.ArgumentParser(
        prog="idtfv",
        description="Improved dense trajectories -> Fisher vectors -> linear SVM, and CNN baselines, over a "
                    "dataset manifest. Each subcommand is one resumable pipeline stage.",
        epilog="Bad input exits with status 2; a stage with failed videos exits with status 1.")
    parser.add_argument("--version", action="version", version=f"idtfv {idt.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_dataset(subparsers)
    _add_features(subparsers)
    for module in _load_plugins(modules):
        register = getattr(module, "register", None)
        if not callable(register):
            raise ImportError(f"{module.__name__} has no register(subparsers) function for the idtfv command")
        register(subparsers)
    return parser


def _plugin_modules_for(argv: list[str]) -> tuple[str, ...]:
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command in ("dataset", "features"):
        return ()
    if command in _COMMAND_MODULES:
        return (_COMMAND_MODULES[command],)
    return PLUGIN_MODULES


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``idtfv`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(modules=_plugin_modules_for(argv))
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        status = func(args)
    except (IdtfvError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; finished videos are kept, rerun to resume", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
