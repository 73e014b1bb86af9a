"""idtfv: improved dense trajectories -> Fisher vectors -> linear SVMs, with CNN baselines on the same data.

This package is the **base** every stage builds on; it imports no stage. Its modules:

- :mod:`idtfv.errors`: the exception types every stage raises, and the CLI exit statuses.
- :mod:`idtfv.atomic`: atomic, byte-deterministic file writes (text, JSON, ``.npz``).
- :mod:`idtfv.lock`: the one advisory lock that every run writing into a directory holds.
- :mod:`idtfv.video`: the one video reader.
- :mod:`idtfv.data`: the dataset manifest, dataset readers and the synthetic default dataset.
- :mod:`idtfv.scores`: the score and feature files every classifier and encoder writes (one format each).
- :mod:`idtfv.sampling`: seeded row and video sampling shared by the features and encoding stages.
- :mod:`idtfv.options`: command-line options generated from frozen options dataclasses.
- :mod:`idtfv.cache` and :mod:`idtfv.runner`: the parameter-keyed stage cache and the resumable per-video runner.
- :mod:`idtfv.cli`: the ``idtfv`` command dispatcher (stages register their commands as entry points).

The stages are subpackages, each with a ``stage.py`` (what runs per video or per split) and a ``cli.py``:
:mod:`idtfv.idt` (extractor and optical flow), :mod:`idtfv.encoding` (PCA, GMM, Fisher vectors),
:mod:`idtfv.classify` (SVM, k-NN, evaluation, fusion) and :mod:`idtfv.deep` (PyTorch baselines). See
``docs/ARCHITECTURE.md``.
"""

__version__ = "0.4.1"

__all__ = ["__version__"]
