"""Benchmark: our Fisher vectors against VLFeat's ``vl_fisher`` (SSE2/AVX build), one thread each, in one loop.

In-process micro-benchmark (labelled as such in RESULTS.md): the two encoders run alternately (ours, VLFeat, ours,
VLFeat, ...) in the same process, pinned to one CPU, one thread each (``NUMBA_NUM_THREADS=1``,
``OMP_NUM_THREADS=1``, BLAS limited to one thread); the first round is a warm-up and is not counted; figures are
medians of CPU seconds (``time.process_time``) with min-max over the rounds.

Data, K=256, improved Fisher vectors (signed square root + L2) on both sides:

* **real**: iDT descriptors of the shared clips (``../shared/reference/videos``, first 200 frames each, extracted
  with the reference options and cached by ``bench/_clips.py``), reduced by PCA as the pipeline does: HOG 96 -> 48
  (D=48) and all five channels concatenated 426 -> 213 (D=213). PCA and a K=256 GMM (``DiagGMM``, the pipeline's
  settings) are fitted on every other descriptor; each round encodes every clip (one vector per clip, as the
  encode stage does per video).
* **random**: Gaussian noise (the posteriors are far less sparse than on real descriptors), GMM fitted on other
  noise draws, one vector of ``--random-n`` descriptors.

VLFeat gets its own data type (float32 descriptors and GMM) and its default settings except the improved flag
(``VL_FISHER_FLAG_IMPROVED``); it is the same GMM for both. The library is ``../shared/reference/vlfeat/libvl.so.1``
(VLFeat 0.9.21 built with SSE2/AVX), loaded by path and called through ``ctypes`` (``bench/_vlfeat.py``: no
cyvlfeat, headers or compiler; ``vl_set_num_threads(1)``); the script prints which file the process mapped for
``vl_fisher_encode`` and VLFeat's own configuration report (``vl_configuration_to_string_copy``,
``vl_get_simd_enabled``). Without the library the benchmark says so and exits 0 without writing.

Agreement: max |ours - VLFeat| over the clip vectors (both unit-norm), and both against a dense float64
evaluation of the formulas (written here, no clamp) on the first ``--check`` descriptors of each clip.

Usage: ``python bench/bench_fisher.py [--repeat 7] [--no-write]``; updates the ``bench_fisher`` block of the
``## encoding`` section of ``bench/RESULTS.md`` with rows for README table ``speed`` (``fv-d48``, ``fv-d213``,
``fv-d48-random``, ``fv-d213-random``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

os.environ["NUMBA_NUM_THREADS"] = "1"
# vl_fisher runs an OpenMP loop over as many threads as OpenMP allows; threadpoolctl does not reach libvl's runtime
# (set before libgomp loads; VLFeat is also told vl_set_num_threads(1)).
os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from _results import machine, readme_row, write_block  # noqa: E402  (bench/ is the script's directory)
from _vlfeat import LIBRARY, VLFeat  # noqa: E402

SECTION = "## encoding"
BLOCK = "bench_fisher"
K = 256
GOAL = 8.0
#: Stated agreement of the unit-norm vectors, ours vs VLFeat (VLFeat's float32 sums drift by ~1e-4 on 50,000
#: noise descriptors; ours stays within 1e-5 of float64, as tests/test_fisher.py checks).
AGREE = 2e-4


def float64_fisher(X, mu, var, w, block=256):
    """Reference: dense float64 posteriors and statistics, no clamp, improved FV (2KD,)."""
    mu, var, w = (np.asarray(a, np.float64) for a in (mu, var, w))
    Kc, D = mu.shape
    U = np.zeros((Kc, D))
    V = np.zeros((Kc, D))
    for s in range(0, len(X), block):
        x = X[s:s + block].astype(np.float64)
        diff = x[:, None, :] - mu[None]
        ll = np.log(w) - 0.5 * np.log(var).sum(1) - 0.5 * (diff ** 2 / var[None]).sum(2)
        q = np.exp(ll - ll.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        z = diff / np.sqrt(var)[None]
        U += np.einsum("nk,nkd->kd", q, z)
        V += np.einsum("nk,nkd->kd", q, z * z - 1)
    N = len(X)
    f = np.concatenate([(U / (N * np.sqrt(w)[:, None])).ravel(), (V / (N * np.sqrt(2 * w)[:, None])).ravel()])
    f = np.sign(f) * np.sqrt(np.abs(f))
    return f / max(np.linalg.norm(f), 1e-12)


def real_problems(log):
    """[(name, D, GMM, [per-clip descriptors (n, D) float32])] from the shared clips, or [] without them."""
    from _clips import CHANNELS, clip_arrays

    from idtfv.encoding.gmm import DiagGMM
    from idtfv.encoding.pca import DescriptorPCA

    clips = clip_arrays(log=log)
    if not clips:
        return [], {}
    out = []
    for D, pick in ((48, lambda a: a["hog"]), (213, lambda a: np.hstack([a[c] for c in CHANNELS]))):
        raw = [np.ascontiguousarray(pick(a), np.float32) for a in clips.values()]
        train = np.concatenate([r[::2] for r in raw])
        pca = DescriptorPCA().fit(train)
        gmm = DiagGMM(K, random_state=0).fit(pca.transform(train))
        out.append(("real", D, gmm, [np.ascontiguousarray(pca.transform(r)) for r in raw]))
    return out, {name: len(a["meta"]) for name, a in clips.items()}


def random_problems(n: int):
    from idtfv.encoding.gmm import DiagGMM

    rng = np.random.default_rng(0)
    out = []
    for D in (48, 213):
        train = rng.standard_normal((40_000, D)).astype(np.float32)
        gmm = DiagGMM(K, random_state=0).fit(train)
        out.append(("random", D, gmm, [rng.standard_normal((n, D)).astype(np.float32)]))
    return out


def race(vl: VLFeat, gmm, sets, repeat: int):
    """Alternating rounds (ours, VLFeat); returns CPU-second lists (warm-up dropped) and the last outputs."""
    from idtfv.encoding.fisher import fisher_vector

    vl_args = (np.asarray(gmm.means_, np.float32), np.asarray(gmm.variances_, np.float32),
               np.asarray(gmm.weights_, np.float32))
    t_ours, t_vl = [], []
    f_ours = f_vl = None
    for r in range(repeat + 1):
        c = time.process_time()
        f_ours = [fisher_vector(X, gmm) for X in sets]
        t = time.process_time() - c
        c = time.process_time()
        f_vl = [vl.fisher(X, *vl_args, improved=True) for X in sets]
        tv = time.process_time() - c
        if r:  # round 0 is the warm-up (JIT cache load, first-touch allocations)
            t_ours.append(t)
            t_vl.append(tv)
    return t_ours, t_vl, f_ours, f_vl


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7, help="timed rounds after one warm-up round (default 7)")
    ap.add_argument("--random-n", type=int, default=50_000, help="descriptors of the random-data vector")
    ap.add_argument("--check", type=int, default=2_000,
                    help="descriptors per clip checked against the float64 reference (default 2000)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = ap.parse_args(argv)

    if not LIBRARY.is_file():
        print(f"bench_fisher: skipped: {LIBRARY} (VLFeat with SIMD) is absent; the baseline must be the SIMD build")
        return 0
    vl = VLFeat(LIBRARY, threads=1)
    build = vl.report()
    print(f"VLFeat library mapped: {build['mapped']}; vl_get_simd_enabled={build['simd']}, CPU AVX={build['avx']}, "
          f"SSE2={build['sse2']}, threads={build['threads']}\n{build['config']}", flush=True)
    if Path(build["mapped"]).resolve() != LIBRARY.resolve():
        print(f"bench_fisher: skipped: vl_fisher_encode lives in {build['mapped']}, not the SIMD build {LIBRARY}")
        return 0
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})

    load = os.getloadavg()
    rows = []
    with threadpool_limits(1):
        problems, clip_rows = real_problems(lambda m: print(m, flush=True))
        if not problems:
            print("bench_fisher: ../shared/reference/videos is absent: real-descriptor rows skipped")
        problems += random_problems(args.random_n)
        for kind, D, gmm, sets in problems:
            n = sum(len(X) for X in sets)
            t_o, t_v, f_o, f_v = race(vl, gmm, sets, args.repeat)
            diff = max(float(np.abs(a - b).max()) for a, b in zip(f_o, f_v))
            # agreement with float64 on the first --check descriptors of each set (same GMM for all three)
            from idtfv.encoding.fisher import fisher_vector

            m = (gmm.means_, gmm.variances_, gmm.weights_)
            vl_args = tuple(np.asarray(a, np.float32) for a in m)
            err_o = err_v = 0.0
            for X in sets:
                sub = X[:args.check]
                ref = float64_fisher(sub, *m)
                err_o = max(err_o, float(np.abs(fisher_vector(sub, gmm) - ref).max()))
                err_v = max(err_v, float(np.abs(vl.fisher(sub, *vl_args, improved=True) - ref).max()))
            ratios = np.array(t_v) / np.array(t_o)
            row = dict(kind=kind, D=D, n=n, sets=len(sets), ours=np.array(t_o), vl=np.array(t_v), ratios=ratios,
                       diff=diff, err_o=err_o, err_v=err_v)
            rows.append(row)
            if diff > AGREE:
                print(f"bench_fisher: warning: ours and VLFeat differ by {diff:.1e} > {AGREE:g} ({kind}, D={D})")
            print(f"{kind} D={D} ({n:,} descriptors in {len(sets)} vectors): ours {np.median(t_o) * 1e3:.1f} ms, "
                  f"VLFeat {np.median(t_v) * 1e3:.1f} ms, ratio {np.median(t_v) / np.median(t_o):.2f}x "
                  f"({ratios.min():.2f}-{ratios.max():.2f}); max|ours-VLFeat| {diff:.1e}; vs float64: ours "
                  f"{err_o:.1e}, VLFeat {err_v:.1e}", flush=True)

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### Fisher vectors vs VLFeat (`python bench/bench_fisher.py --repeat {args.repeat}`, in-process "
             f"micro-benchmark, {machine()}, {now})", "",
             f"One CPU (affinity {{{cpu}}}), one thread each (`NUMBA_NUM_THREADS=1`, `OMP_NUM_THREADS=1`, BLAS 1 "
             f"thread), alternating ours / VLFeat in one loop, {args.repeat} rounds after a warm-up; CPU seconds, "
             f"median (min-max); ratio = median VLFeat / median ours (min-max of the per-round ratios). K={K}, "
             f"improved FV, same GMM. Load average at the start: {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}.", "",
             f"VLFeat: `vl_fisher_encode` through ctypes (bench/_vlfeat.py) in `{build['mapped']}` "
             f"(vl_get_simd_enabled={build['simd']}, CPU AVX={build['avx']}, vl_get_max_threads={build['threads']}); "
             f"its report: `{build['config']}`.", "",
             "| what | ours | baseline | ratio |", "|---|---|---|---|"]
    for r in rows:
        what = (f"Fisher vectors K={K}, D={r['D']}, "
                + (f"real iDT descriptors ({'HOG' if r['D'] == 48 else 'all channels'}, PCA; "
                   f"{r['n']:,} in {r['sets']} clips)" if r["kind"] == "real" else
                   f"Gaussian noise ({r['n']:,} descriptors)")
                + ", one thread, in-process")
        ours = f"{r['n'] / np.median(r['ours']) / 1e6:.2f} M descriptors/CPU-s"
        base = f"VLFeat 0.9.21 SSE2/AVX {r['n'] / np.median(r['vl']) / 1e6:.2f} M descriptors/CPU-s"
        ratio = (f"{np.median(r['vl']) / np.median(r['ours']):.2f}x ({r['ratios'].min():.2f}–"
                 f"{r['ratios'].max():.2f}); goal {GOAL:g}x")
        key = f"fv-d{r['D']}" + ("" if r["kind"] == "real" else "-random")
        lines.append(readme_row("speed", key, [what, ours, base, ratio]))
    lines += ["", f"| data | D | descriptors | ours ms | VLFeat ms | max abs ours - VLFeat (agree: <= {AGREE:g}) | "
                  "ours vs float64 | VLFeat vs float64 |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        agree = "yes" if r["diff"] <= AGREE else "**NO**"
        lines.append(f"| {r['kind']} | {r['D']} | {r['n']:,} | {np.median(r['ours']) * 1e3:.1f} "
                     f"({r['ours'].min() * 1e3:.1f}–{r['ours'].max() * 1e3:.1f}) | {np.median(r['vl']) * 1e3:.1f} "
                     f"({r['vl'].min() * 1e3:.1f}–{r['vl'].max() * 1e3:.1f}) | {r['diff']:.1e} ({agree}) | "
                     f"{r['err_o']:.1e} | {r['err_v']:.1e} |")
    if clip_rows:
        lines += ["", "Clips (first 200 frames, reference options): "
                  + ", ".join(f"{k} {v:,}" for k, v in clip_rows.items()) + " trajectories."]
    lines += ["", f"Agreement: max abs difference of the unit-norm vectors; \"vs float64\" is against a dense float64 "
                  f"evaluation of the formulas (no clamp) on the first {args.check:,} descriptors of each clip. "
                  "VLFeat accumulates in float32, so its distance from float64 grows with the number of descriptors; "
                  "ours stays at the float32 output's rounding."]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_block(SECTION, BLOCK, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
