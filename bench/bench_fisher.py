"""Benchmark: Fisher-vector encoding of 100,000 descriptors with K=256 at D=48 and D=213, one core.

Compared in the same run with a careful NumPy/BLAS version (float32 GEMMs for the log-likelihoods and the
statistics, log-posteriors clamped at -60 so nothing underflows into denormals). VLFeat (cyvlfeat) is timed when
installed; otherwise the issue's measurement on this machine kind is quoted (1.75 s at D=48, 6 s at D=213) and
marked as such.

Data: a planted mixture of 512 diagonal Gaussians with Student-t (5 dof) noise, a K=256 GMM fitted to it by
``idtfv.encoding.gmm.DiagGMM`` (the posterior sparsity our encoder exploits depends on the data; this mimics PCA-reduced
iDT descriptors, whose posteriors we measured to be as sparse: ~13 posteriors above exp(-30) per HOG descriptor).

Usage: ``python bench/bench_fisher.py [--repeat 3] [--no-write]``; updates the ``bench_fisher`` block of the
``## encoding`` section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import sys
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
# VLFeat's vl_fisher runs an OpenMP loop with as many threads as OpenMP allows, and threadpoolctl does not reach
# libvlfeat's runtime: without this it used both cores of the shared machine (0.68 s wall, 1.33 s CPU at D=48),
# which made the "one thread" comparison meaningless. Set before anything loads OpenMP.
os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from _results import write_block  # noqa: E402
from idtfv.encoding.fisher import fisher_vector  # noqa: E402
from idtfv.encoding.gmm import DiagGMM  # noqa: E402

SECTION = "## encoding"
BLOCK = "bench_fisher"
VLFEAT_QUOTED = {48: 1.75, 213: 6.0}


def mixture(rng, D, Kt=512):
    """Planted mixture: means (Kt, D), standard deviations (Kt, D), weights (Kt,)."""
    return rng.normal(size=(Kt, D)), rng.uniform(0.3, 1.0, (Kt, D)), rng.dirichlet(np.ones(Kt) * 2)


def draw(rng, params, n):
    mu, sd, w = params
    z = rng.choice(len(w), n, p=w)
    return (mu[z] + rng.standard_t(5, size=(n, mu.shape[1])) * sd[z]).astype(np.float32)


def numpy_blas_fisher(X, mu, var, w, block=8192):
    """Careful dense NumPy: float32 GEMMs, log-sum-exp clamped at -60, statistics by GEMM, improved FV."""
    K, D = mu.shape
    mu = mu.astype(np.float32)
    iv = (1.0 / var).astype(np.float32)
    W = np.concatenate([-0.5 * iv.T, (mu * iv).T]).astype(np.float32)
    c = (np.log(w) - 0.5 * np.log(var).sum(1) - 0.5 * (mu.astype(np.float64) ** 2 * iv).sum(1)).astype(np.float32)
    S0 = np.zeros(K)
    S1 = np.zeros((K, D))
    S2 = np.zeros((K, D))
    for s in range(0, len(X), block):
        x = X[s:s + block]
        L = np.hstack([x * x, x]) @ W
        L += c
        L -= L.max(1, keepdims=True)
        np.maximum(L, -60.0, out=L)
        np.exp(L, out=L)
        L /= L.sum(1, keepdims=True)
        S0 += L.sum(0)
        S1 += L.T @ x
        S2 += L.T @ (x * x)
    N = len(X)
    sig = np.sqrt(var.astype(np.float64))
    u = (S1 - S0[:, None] * mu) / sig / (N * np.sqrt(w)[:, None])
    mu2 = mu.astype(np.float64) ** 2
    v = ((S2 - 2 * mu * S1 + mu2 * S0[:, None]) / var - S0[:, None]) / (N * np.sqrt(2 * w)[:, None])
    f = np.concatenate([u.ravel(), v.ravel()])
    f = np.sign(f) * np.sqrt(np.abs(f))
    return (f / max(np.linalg.norm(f), 1e-12)).astype(np.float32)


def float64_fisher(X, mu, var, w, block=1000):
    """Reference: dense float64 posteriors and statistics, no clamp (slow; used on a subset)."""
    mu, var, w = (np.asarray(a, np.float64) for a in (mu, var, w))
    K, D = mu.shape
    U = np.zeros((K, D))
    V = np.zeros((K, D))
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


def best_of(fn, repeat):
    wall, cpu, out = [], [], None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--check", type=int, default=100_000,
                    help="descriptors checked against the float64 reference (default: all; ~1 min at D=213)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    have_vl = importlib.util.find_spec("cyvlfeat") is not None
    rows = []
    with threadpool_limits(1):
        for D in (48, 213):
            params = mixture(rng, D)
            train = draw(rng, params, 40_000)
            gmm = DiagGMM(256, max_iter=8, random_state=0).fit(train)
            X = draw(rng, params, args.n)
            fisher_vector(X[:500], gmm)  # compile / warm up
            m = (gmm.means_, gmm.variances_.astype(np.float64), gmm.weights_)
            w_ours, c_ours, f_ours = best_of(lambda: fisher_vector(X, gmm), args.repeat)
            w_np, c_np, f_np = best_of(lambda: numpy_blas_fisher(X, *m), args.repeat)
            sub = X[: args.check]
            ref = float64_fisher(sub, *m)
            err_ours = float(np.abs(fisher_vector(sub, gmm) - ref).max())
            err_np = float(np.abs(numpy_blas_fisher(sub, *m) - ref).max())
            diff = float(np.abs(f_ours - f_np).max())
            vl = err_vl = None
            if have_vl:
                from cyvlfeat.fisher import fisher as vl_fisher

                vl_args = (gmm.means_, gmm.variances_, gmm.weights_.astype(np.float32))  # (K, D) row-major
                _, vl, f_vl = best_of(lambda: vl_fisher(X, *vl_args, improved=True), args.repeat)  # CPU seconds
                f_vl = np.asarray(f_vl).ravel()
                diff = float(np.abs(f_ours - f_vl).max())
                vl_sub = f_vl if len(sub) == len(X) else np.asarray(vl_fisher(sub, *vl_args, improved=True)).ravel()
                err_vl = float(np.abs(vl_sub - ref).max())
            rows.append((D, w_ours, c_ours, w_np, c_np, vl, diff, err_ours, err_np, err_vl))
            print(f"D={D}: ours {w_ours:.3f} s (cpu {c_ours:.3f}), numpy/BLAS {w_np:.3f} s (cpu {c_np:.3f}), "
                  f"ratio (CPU) {c_np / c_ours:.2f}x; vlfeat {'%.3f s' % vl if vl else 'not installed'}; "
                  f"max |diff| {diff:.2e}; vs float64 on {len(sub)}: ours {err_ours:.1e}, numpy {err_np:.1e}"
                  + (f", vlfeat {err_vl:.1e}" if err_vl is not None else ""), flush=True)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### Fisher vectors (`python bench/bench_fisher.py`, {platform.machine()}, one thread, {now}; "
             f"shared noisy machine: best of {args.repeat})", "",
             f"{args.n:,} descriptors, K=256, improved FV; wall seconds (CPU seconds). Speed-ups use CPU seconds; "
             "VLFeat (one OpenMP thread, `OMP_NUM_THREADS=1`) is given in CPU seconds, best of the same repeats.", "",
             "| D | ours | careful NumPy/BLAS | speed-up vs NumPy | VLFeat | speed-up vs VLFeat | error ours | "
             "error NumPy | error VLFeat | ours vs " + ("VLFeat" if have_vl else "NumPy") + " |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for D, wo, co, wn, cn, vl, diff, eo, en, ev in rows:
        ref = vl if vl else VLFEAT_QUOTED[D]
        src = f"{vl:.3f}" if vl else f"{VLFEAT_QUOTED[D]} (quoted from the issue, not measured here)"
        lines.append(f"| {D} | {wo:.3f} ({co:.3f}) | {wn:.3f} ({cn:.3f}) | {cn / co:.2f}x | {src} | "
                     f"{ref / co:.1f}x | {eo:.1e} | {en:.1e} | {'%.1e' % ev if ev is not None else 'n/a'} | "
                     f"{diff:.1e} |")
    lines += ["", f"Errors: max abs difference from a dense float64 evaluation of the formulas (no clamp, written in "
                  f"the bench) on the first {args.check:,} descriptors; last column: max abs difference between our "
                  f"and VLFeat's {args.n:,}-descriptor vectors. All vectors are unit-norm. VLFeat's own distance from "
                  "the float64 formulas grows with the number of descriptors (at D=48: 5.0e-7 on 5,000, 1.8e-6 on "
                  "20,000, 1.1e-5 on 100,000, also when cyvlfeat is given float64 arrays), ours does not: the last column is VLFeat's "
                  "error, not ours."]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_block(SECTION, BLOCK, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
