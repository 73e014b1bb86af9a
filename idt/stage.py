"""The features stage: improved dense trajectories of every video of a manifest (``idtfv features``).

:func:`run_features` runs the per-video functions through :func:`idtfv.runner.run_stage`. Those functions have the
runner's signature ``func(entry, params) -> dict[str, np.ndarray]``, are module-level (shipped to worker
processes) and import the extractor inside the call, so that importing this module (in the CLI or in a Dask
worker) is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["features_params", "run_features", "features_item", "features_sample_item", "warmup_features"]


def features_item(entry, params: Mapping) -> dict[str, np.ndarray]:
    """Extract improved dense trajectories of one video.

    Parameters
    ----------
    entry : idtfv.data.manifest.VideoEntry
        The video; ``entry.path`` is its absolute path.
    params : mapping
        ``{"idt": IDTParams.to_dict()}``.

    Returns
    -------
    dict of str to ndarray
        ``Trajectories.as_arrays()``: ``meta (n,10)``, ``traj (n,30)``, ``hog (n,96)``, ``hof (n,108)``,
        ``mbhx (n,96)``, ``mbhy (n,96)`` float32 and ``info_json`` (0-d unicode).
    """
    from idtfv.idt.extractor import extract
    from idtfv.idt.params import IDTParams

    idt_params = IDTParams.from_dict(dict(params["idt"]))
    return extract(entry.path, params=idt_params).as_arrays()


def features_sample_item(entry, params: Mapping) -> dict[str, np.ndarray]:
    """Extract one video's trajectories and keep only a seeded sample of them (``idtfv features --store sample``).

    The streaming mode's features stage: the full descriptors exist only in this call; what is returned (and
    stored) is the sample that PCA and the codebook are fitted from (``idtfv.sampling.keep_sample``, rows drawn
    by ``video_rng(sample_seed, video_id)``), so each stored file is bounded by ``sample_per_video`` rows.

    Parameters
    ----------
    entry : idtfv.data.manifest.VideoEntry
        The video; ``entry.path`` is its absolute path.
    params : mapping
        ``{"idt": IDTParams.to_dict(), "store": "sample", "sample_per_video": N, "sample_seed": s}``.

    Returns
    -------
    dict of str to ndarray
        ``sample_meta (m,10)``, ``sample_traj (m,30)``, ``sample_hog (m,96)``, ``sample_hof (m,108)``,
        ``sample_mbhx (m,96)``, ``sample_mbhy (m,96)`` float32 (the same ``m = min(N, n)`` rows of every array),
        ``n_rows`` () int64 (``n``, the video's trajectory count) and ``info_json`` (0-d unicode).
    """
    from idtfv.idt.extractor import extract
    from idtfv.idt.params import IDTParams
    from idtfv.sampling import keep_sample

    idt_params = IDTParams.from_dict(dict(params["idt"]))
    arrays = extract(entry.path, params=idt_params).as_arrays()
    out = keep_sample(arrays, n_keep=int(params["sample_per_video"]), seed=int(params["sample_seed"]),
                      video_id=entry.video_id)
    out["n_rows"] = np.array(arrays["meta"].shape[0], np.int64)
    if "info_json" in arrays:
        out["info_json"] = arrays["info_json"]
    return out


def warmup_features(params: Mapping) -> None:
    """Compile the extractor's Numba kernels once in this process before worker processes start.

    Serial kernels are compiled with ``cache=True``, so the workers then load them from the on-disk cache instead
    of each compiling them at the same time. Runs :func:`idtfv.idt.extract` on 24 synthetic 96x72 frames of a
    translating texture; any failure is ignored (the real run reports per-video errors).
    """
    try:
        from idtfv.idt.extractor import extract
        from idtfv.idt.params import IDTParams

        idt_params = IDTParams.from_dict(dict(params["idt"]))
        rng = np.random.default_rng(0)
        texture = rng.integers(0, 256, (72, 160)).astype(np.float32)
        texture = (texture + np.roll(texture, 1, 0) + np.roll(texture, 1, 1) + np.roll(texture, 1, (0, 1))) / 4
        frames = [np.ascontiguousarray(texture[:, 2 * t: 2 * t + 96]).astype(np.uint8) for t in range(24)]
        extract(frames, params=idt_params)
    except Exception:  # noqa: BLE001 - a warm-up must never stop the run
        pass


def features_params(*, preset: str = "default", flow: str | None = None, resize_width: int | None = None,
                    seed: int | None = None) -> dict:
    """The features stage parameters ``{"idt": IDTParams.to_dict()}`` for these command-line choices."""
    from idtfv.idt.params import IDTParams

    params = IDTParams() if preset == "default" else IDTParams.fast()
    changes = {key: value for key, value in (("flow", flow), ("resize_width", resize_width), ("seed", seed))
               if value is not None}
    if changes:
        params = params.replace(**changes)
    return {"idt": params.to_dict()}


def run_features(entries, params: Mapping, *, cache_root, jobs: int = 1, scheduler=None, force: bool = False,
                 func=None):
    """Run the features stage over ``entries``; returns the runner's :class:`~idtfv.runner.StageResult`.

    ``params`` is :func:`features_params`' dict, plus ``store="sample"``, ``sample_per_video`` and
    ``sample_seed`` for the streaming mode (:func:`features_sample_item`). ``func`` replaces the per-video
    function (tests).
    """
    from idtfv.runner import run_stage

    if func is None:
        func = features_sample_item if params.get("store") == "sample" else features_item
    if jobs != 1 and scheduler is None and len(entries) > 1 and func in (features_item, features_sample_item):
        warmup_features(params)  # compile the kernels once, not once per worker at the same time
    return run_stage("features", func, entries, params=dict(params), cache_root=cache_root, jobs=jobs,
                     scheduler=scheduler, force=force)
