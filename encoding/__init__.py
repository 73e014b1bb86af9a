"""encoding: per-video iDT descriptors -> fixed-length video vectors (Fisher vectors, BoF, VLAD).

Modules (one job each):

- ``params``: :class:`EncodeParams`, every result-affecting option of the encode stage (frozen, validated; the
  ``idtfv encode`` options are generated from its fields).
- ``pca``: :class:`DescriptorPCA`, PCA per descriptor channel to half the dimensions, optional whitening,
  deterministic signs.
- ``gmm``: :class:`DiagGMM`, diagonal GMM by a fast EM (float32 BLAS screen + Numba statistics, ``_posterior_nb``),
  k-means(++) initialisation, variance/prior floors, empty-component restarts, convergence report.
- ``fisher``: :func:`fisher_vector`, :func:`fisher_vectors_cells`, VLFeat's layout ``[u_1..u_K, v_1..v_K]`` and
  normalisation (improved = signed square root, then L2); VLFeat's floors as keyword arguments.
- ``pyramid``: spatio-temporal grids (``"1x1x1,1x3x1,1x1x2"``) from the trajectories' normalised positions.
- ``temporal``: Fisher vectors of many temporal windows of a video from prefix sums of per-bin statistics
  (:class:`TemporalFisher`, :func:`score_windows`; ``idtfv detect``).
- ``kmeans``, ``bof``, ``vlad``: the bag-of-features (K=4000, L1 histograms) and VLAD baselines.
- ``sampling``: seeded per-video descriptor sampling; the features' descriptor layout (channel widths from the
  extractor's options, :class:`idtfv.idt.DescriptorLayout`); the streaming mode (``keep_sample`` during extraction).
- ``codebook_io``: ``.npz`` + ``.json`` codebooks, no pickles.
- ``stage`` / ``streaming`` / ``cli``: the ``idtfv encode`` stage (``make encode``); ``record``: the
  ``<out>.json`` beside its feature file naming the codebook (path in the cache, content hash) it was made with.

Streaming mode (UCF101-size data without keeping raw descriptors): in the features stage function, call
``idtfv.sampling.keep_sample(arrays, n_keep=..., seed=..., video_id=...)`` and store the returned ``sample_*``
arrays (alone or with the full arrays). ``idtfv encode`` fits PCA and the codebook from ``sample_*`` arrays when a
file has them, and each video's vector comes from ``idtfv.encoding.stage.encode_arrays(arrays, models, ...)`` — called
by ``idtfv encode`` on the stored descriptors, or directly in an extraction job on fresh descriptors with the
models of ``idtfv.encoding.stage.load_codebooks(dir)``. Memory: one video's descriptors plus the model.

Small datasets: ``idtfv encode`` keeps K=256 and the 256,000-descriptor sample by default, but caps the sample at
what the training videos have and K at ``n_samples // 20`` (a logged warning), so ``make encode`` works on the
built-in default dataset; pass ``ENCODE_ARGS="--k 64"`` (etc.) to choose.
"""

from idtfv.lazy import lazy_exports

__all__ = ["EncodeParams", "DescriptorPCA", "DiagGMM", "fisher_vector", "fisher_vectors_cells", "normalize_fisher",
           "run_encode", "load_codebooks", "encoded_dim", "TemporalFisher", "time_bins", "score_windows",
           "encode_windows", "read_encode_record", "record_path", "codebook_sha256", "recorded_codebook"]
_HOMES = {"EncodeParams": "params", "DescriptorPCA": "pca", "DiagGMM": "gmm", "fisher_vector": "fisher",
          "fisher_vectors_cells": "fisher", "normalize_fisher": "fisher",
          # the encode stage, for idtfv.classify's cross-validation (one codebook per fold)
          "run_encode": "stage", "load_codebooks": "stage", "encoded_dim": "stage",
          # window Fisher vectors from prefix sums over time, for idtfv.classify's temporal detection
          "TemporalFisher": "temporal", "time_bins": "temporal", "score_windows": "temporal",
          "encode_windows": "temporal",
          # which codebook an encode output was made with (``<out>.json``), for idtfv detect and train-svm
          "read_encode_record": "record", "record_path": "record", "codebook_sha256": "record",
          "recorded_codebook": "record"}


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)  # ``idtfv --help`` loads no Numba
