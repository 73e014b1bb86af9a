"""Every result-affecting option of the encode stage, in one frozen, validated dataclass: :class:`EncodeParams`.

``idtfv encode`` generates its encoding options from the fields (:mod:`idtfv.options`: help, choices and the
defaults shown come from here), and :func:`idtfv.encoding.stage.run_encode` /
:func:`idtfv.encoding.streaming.run_streaming_encode` take one ``EncodeParams``. How a run is executed (jobs,
scheduler, force, cache, output) is not part of it.

Light on purpose (standard library, NumPy and the descriptor layout only): ``idtfv encode --help`` imports it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from idtfv.errors import ParameterError
from idtfv.idt import DescriptorLayout
from idtfv.options import choices_of, field_error, option

from .pyramid import n_cells, parse_pyramid

__all__ = ["EncodeParams", "METHODS", "DEFAULT_K", "CHANNELS", "DEFAULT_PCA_SAMPLES", "DEFAULT_GMM_ITER",
           "MAX_PYRAMID_CELLS"]

#: Default codebook size per method (iDT papers: GMM K=256 for Fisher vectors, k-means K=4000 for BoF).
DEFAULT_K = {"fisher": 256, "bof": 4000, "vlad": 256}
METHODS = tuple(DEFAULT_K)
#: The descriptor channels that can be encoded (the extractor's, in LEAR's order).
CHANNELS = DescriptorLayout.CHANNELS
#: Default sample size per channel for fitting PCA and the codebook (iDT papers: 256,000).
DEFAULT_PCA_SAMPLES = 256_000
#: Default EM iterations (early stop at tol=1e-3 nats per descriptor).
DEFAULT_GMM_ITER = 30
#: Fields that change only how the vectors are pooled, not the codebook (left out of :meth:`codebook_key`).
_POOLING_ONLY = ("pyramid",)
#: Upper bound of the pyramid's cells, all grids together: each cell is a whole vector (2KD dims for Fisher
#: vectors: 109,056 at the defaults) of every video; the iDT papers use up to 1x1x1 + 1x3x1 + 1x1x2 (6 cells), and
#: ``1000x1000x1`` made every video fail with NumPy's "Unable to allocate 61.0 GiB".
MAX_PYRAMID_CELLS = 64
_SEED_LIMIT = 2**32


@dataclass(frozen=True)
class EncodeParams:
    """Options of the encode stage (frozen; compare, hash and serialise with :meth:`to_dict`).

    Parameters
    ----------
    method : str
        ``"fisher"`` (PCA + diagonal GMM, improved Fisher vectors), ``"bof"`` (k-means, L1 histograms) or
        ``"vlad"`` (k-means, VLAD).
    k : int or None
        Codebook size K (None: :data:`DEFAULT_K` of the method); lowered with a warning when the training sample
        has fewer than 20 descriptors per component.
    pca_samples : int
        Descriptors per channel sampled (seeded, spread evenly) from the training videos to fit PCA and the
        codebook; capped at what the videos have.
    pca_whiten : bool
        Whiten the PCA output.
    pyramid : str
        Spatio-temporal grids ``NXxNYxNT``, comma-separated (``"1x1x1,1x3x1,1x1x2"``); a sequence of
        ``(nx, ny, nt)`` is accepted and stored in this canonical text form. At most :data:`MAX_PYRAMID_CELLS`
        cells in all.
    channels : str
        Descriptor channels to encode, comma-separated, in the vector's order (a sequence of names is accepted
        and stored in this canonical form); see :attr:`channel_names`.
    gmm_iter : int
        Maximum EM iterations of the GMM (``fisher``).
    seed : int
        Seeds the sample, k-means++ and EM; same input + seed -> same output bytes.
    """

    method: str = option("fisher", "encoding: fisher (GMM, Fisher vectors), bof (k-means histograms) or vlad",
                         choices=METHODS)
    k: int | None = option(None, "codebook size K; lowered with a warning when the training sample is too small",
                           metavar="K", none="per method: " + ", ".join(f"{m} {k}" for m, k in DEFAULT_K.items()))
    pca_samples: int = option(DEFAULT_PCA_SAMPLES, "descriptors per channel sampled from the training videos to fit "
                              "PCA and the codebook (capped at what the videos have)", metavar="N")
    pca_whiten: bool = option(False, "whiten the PCA output")
    pyramid: str = option("1x1x1", "spatio-temporal grids NXxNYxNT, comma-separated, e.g. 1x1x1,1x3x1,1x1x2",
                          metavar="GRIDS")
    channels: str = option(",".join(CHANNELS), "descriptor channels to encode, comma-separated, from "
                           + ",".join(CHANNELS), metavar="LIST")
    gmm_iter: int = option(DEFAULT_GMM_ITER, "maximum EM iterations (fisher)", metavar="N")
    seed: int = option(0, "random seed: sampling, k-means++, EM", metavar="S")

    def __post_init__(self):
        def bad(name, expected):
            return field_error("EncodeParams", name, expected, getattr(self, name), _DEFAULTS[name])

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise bad(name, "one of " + ", ".join(allowed))
        if self.k is not None and not (is_int(self.k) and self.k >= 1):
            raise bad("k", "an integer >= 1")
        if not (is_int(self.pca_samples) and self.pca_samples >= 2):
            raise bad("pca_samples", "an integer >= 2")
        if not isinstance(self.pca_whiten, bool):
            raise bad("pca_whiten", "True or False")
        if not (is_int(self.gmm_iter) and self.gmm_iter >= 1):
            raise bad("gmm_iter", "an integer >= 1")
        if not (is_int(self.seed) and 0 <= self.seed < _SEED_LIMIT):
            raise bad("seed", f"an integer in [0, {_SEED_LIMIT})")
        try:
            grids = parse_pyramid(self.pyramid)
        except (TypeError, ValueError):  # ParameterError, or not a grid list at all
            grids = None
        if grids is None:
            raise bad("pyramid", "grids NXxNYxNT with positive sizes, comma-separated (e.g. 1x1x1,1x3x1)")
        if n_cells(grids) > MAX_PYRAMID_CELLS:
            raise bad("pyramid", f"grids of at most {MAX_PYRAMID_CELLS} cells in all (each cell is a whole vector "
                                 f"of every video), not {n_cells(grids)}")
        object.__setattr__(self, "pyramid", ",".join(f"{a}x{b}x{c}" for a, b, c in grids))
        names = self.channels
        if isinstance(names, str):
            names = [c.strip() for c in names.split(",") if c.strip()]
        elif isinstance(names, (list, tuple)) and all(isinstance(c, str) for c in names):
            names = list(names)
        else:
            names = None
        if not names or any(c not in CHANNELS for c in names) or len(set(names)) != len(names):
            raise bad("channels", "distinct names from " + ",".join(CHANNELS) + ", comma-separated")
        object.__setattr__(self, "channels", ",".join(names))

    # ------------------------------------------------------------------ derived values
    @property
    def channel_names(self) -> tuple[str, ...]:
        """The channels to encode, in the vector's order, e.g. ``("traj", "hog", "hof", "mbhx", "mbhy")``."""
        return tuple(self.channels.split(","))

    @property
    def grids(self) -> tuple[tuple[int, int, int], ...]:
        """The pyramid's grids ``((nx, ny, nt), ...)`` (:func:`idtfv.encoding.pyramid.parse_pyramid`)."""
        return parse_pyramid(self.pyramid)

    @property
    def codebook_size(self) -> int:
        """K requested: ``k``, or the method's default (before the small-sample cap)."""
        return DEFAULT_K[self.method] if self.k is None else self.k

    # ------------------------------------------------------------------ (de)serialisation
    def replace(self, **changes) -> "EncodeParams":
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """All options as a JSON-safe dict (field order, canonical values): the cache key content."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def codebook_key(self) -> dict:
        """The options the codebook depends on: :meth:`to_dict` without ``pyramid``."""
        return {k: v for k, v in self.to_dict().items() if k not in _POOLING_ONLY}

    @classmethod
    def from_dict(cls, d: dict) -> "EncodeParams":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ParameterError`."""
        if not isinstance(d, dict):
            raise ParameterError(f"EncodeParams.from_dict: expected a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ParameterError(f"EncodeParams: unknown option(s) {', '.join(unknown)}; known options are "
                                 f"{', '.join(sorted(known))}")
        return cls(**d)


_DEFAULTS = {f.name: f.default for f in fields(EncodeParams)}
_CHOICES = choices_of(EncodeParams)
