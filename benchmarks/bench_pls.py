"""bench_pls: PLS1 fits per second on identical subsets, scikit-learn and ikpls loops vs the batched kernel.

RS-LOCAL-v2.0 (Shen et al. 2022, section 2.3.2) fits a PLSR with 10 components on each random subset of
100 library spectra (209 bands) and predicts the 30 local_labelled spectra with it. This script draws
``--subsets`` such subsets from real spectra (the four LimeSoDa vis-NIR sites from the ``limesoda`` package,
plus the Geeves NSW library when ``DTL_DATA`` holds it; SNV absorbance on 420-2500 nm every 10 nm), times

- a scikit-learn loop: ``PLSRegression(n_components=10, scale=False).fit(X, y).predict(local)``,
- an ikpls loop: ``ikpls.numpy.PLS(algorithm=1, scale_X=False, scale_Y=False)``,
- ``dtl_dist.linear.pls1_fit_predict`` in float64 and float32 with several batch sizes,
- the compiled fit-and-score kernel ``dtl_dist.linear.pls_compiled.subset_scores`` (numba, RMSE on the local
  values), float64 and float32, one call for all subsets on one thread and as RS-LOCAL runs it (2x1: each of
  ``--workers`` Python threads scores its own share of the subsets in chunks of 128 calls),

each on the same subsets (ours with ``torch.set_num_threads(2)`` and ``(1)``, and as RS-LOCAL runs it: chunks of 128
subsets spread over ``--workers`` Python threads that each run torch single-threaded; numpy's BLAS as the environment
configures it, OPENBLAS_* untouched), keeping the best of ``--repeat`` runs, and prints fits/s, the speed-ups and the
largest difference from scikit-learn's predictions (relative to their largest magnitude); for the compiled kernel,
which returns scores, the largest relative difference of its RMSE from the RMSE of scikit-learn's predictions
(marked "RMSE"). It also prints the compiled kernel's first-call time (compilation, or loading numba's cache), a
float32-accumulation variant of it (rejected: see the accuracy), and how far scikit-learn's own RMSEs move when the
spectra are rounded to float32 (the floor for any float32 kernel).

Two more forms are measured on the same subsets, as RS-LOCAL runs them (2x1 threads, float32), to record why the
kernel is what it is (issue 10): the kernel before its numpy transpose (torch's strided copy of ``Xc'``), and a Gram
("kernel PLS") form whose work is one GEMM per subset, ``K = Xc Xc'`` (m x m), then NIPALS on K in float64:
with K from a float32 GEMM (fast, but K's rounding swamps the small eigenvalues: see the accuracy column), and with
K accumulated accurately by splitting ``Xc = Z V' + R`` (V: the top ``GRAM_SPLIT`` right singular vectors of the
chunk's first subset; ``Z Z'`` in float64, ``R R'`` by float32 GEMM).

Run: ``.venv/bin/python benchmarks/bench_pls.py``
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from ikpls.numpy import PLS as IKPLS
from sklearn.cross_decomposition import PLSRegression

from dtl_dist.library.ingest import REAL_DATA_GRID, VISNIR_SITES, ingest
from dtl_dist.library.real_data import data_dir, library_sources
from dtl_dist.linear import pls1_fit_predict, pls_compiled, pls_kernel
from dtl_dist.spectra.preprocess import SNV

CHUNK = 128
"""Subsets per kernel call in the threaded mode (as in :mod:`dtl_dist.select.rslocal`)."""
GRAM_SPLIT = 8
"""Rank of the float64 part of the split Gram matrix."""


def gram_fit_predict(X: torch.Tensor, y: torch.Tensor, local: torch.Tensor, ncomp: int, split: int) -> torch.Tensor:
    """PLS1 predictions of ``local`` by the Gram form: K = Xc Xc' (float32 GEMM when ``split`` is 0, else
    ``Z Z' + R R'`` with a rank-``split`` float64 part), NIPALS on K in float64, ``coef = Xc' alpha``."""
    x_mean, y_mean = X.mean(1), y.mean(1)
    Xc = X - x_mean[:, None]
    if split:
        Xd = Xc.double()
        V = torch.linalg.svd(Xd[0], full_matrices=False).Vh[:split].mT
        Z = Xd @ V
        K = torch.baddbmm(((Xd - Z @ V.mT).float() @ (Xd - Z @ V.mT).float().mT).double(), Z, Z.mT)
    else:
        K = (Xc @ Xc.mT).double()
    u = (y - y_mean[:, None]).double()
    B, m = u.shape
    T, U, t_norms, q = K.new_zeros(B, ncomp, m), K.new_zeros(B, ncomp, m), [], []
    for a in range(ncomp):
        Ku = (u[:, None] @ K)[:, 0]
        d = torch.linalg.vecdot(u, Ku).clamp_min(1e-300).rsqrt()  # 1 / ||Xc' u||
        t = Ku * d[:, None]
        t = t - ((t[:, None] @ T[:, :a].mT) @ T[:, :a])[:, 0] if a else t
        t_norms.append(torch.linalg.vector_norm(t, dim=1))
        T[:, a] = t / t_norms[-1][:, None]
        q.append(torch.linalg.vecdot(u, T[:, a]))
        U[:, a] = u * d[:, None]
        u = u - T[:, a] * q[-1][:, None]
    t_norm = torch.stack(t_norms, 1)
    PW = (T @ K @ U.mT) / t_norm[:, :, None]  # P'W: unit upper triangular
    alpha = U.mT @ torch.linalg.solve_triangular(PW, (torch.stack(q, 1) / t_norm)[:, :, None], upper=True)
    coef = (alpha.mT @ Xc.double())[:, 0]
    return ((local.double() - x_mean[:, None].double()) @ coef[:, :, None])[:, :, 0] + y_mean[:, None].double()


def _torch_transposed(Xc: torch.Tensor) -> torch.Tensor:
    """The kernel's transpose before issue 10: torch's strided copy."""
    return Xc.mT.contiguous()


def real_subsets(n_subsets: int, m: int, n_local: int, seed: int = 0):
    """Random subsets of real SNV absorbance spectra (420-2500 nm every 10 nm) and the local spectra to predict.

    Returns the subsets' spectra (B, m, p) and targets (B, m), the local spectra (n, p) and targets (n,), and the
    library they come from: its spectra (N, p), targets (N,) and the subsets' row indices (B, m)."""
    with tempfile.TemporaryDirectory() as tmp:
        lib = ingest(library_sources(VISNIR_SITES, data_dir()), Path(tmp) / "lib.zarr", grid=REAL_DATA_GRID)
        spectra, soc = SNV().fit_transform(lib.spectra().astype(np.float64)), lib.target("soc")
    rng = np.random.default_rng(seed)
    local = rng.choice(len(spectra), n_local, replace=False)
    library = np.setdiff1d(np.arange(len(spectra)), local)
    idx = np.stack([rng.choice(library, m, replace=False) for _ in range(n_subsets)])
    return spectra[idx], soc[idx], spectra[local], soc[local], (spectra, soc, idx)


def best_time(fn, repeat: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subsets", type=int, default=4096)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--ncomp", type=int, default=10)
    parser.add_argument("--local", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch.set_num_threads values")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="Python threads x 1 torch thread")
    args = parser.parse_args()
    X, y, local, local_y, (lib_X, lib_y, lib_idx) = real_subsets(args.subsets, args.samples, args.local)
    B, A = args.subsets, args.ncomp
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{B} subsets x {args.samples} spectra x {X.shape[2]} bands, {A} components, predict {args.local} local spectra")

    def sklearn_loop():
        return np.stack([PLSRegression(A, scale=False).fit(X[b], y[b]).predict(local) for b in range(B)])

    def ikpls_loop():
        model = IKPLS(algorithm=1, scale_X=False, scale_Y=False)
        return np.stack([model.fit(X[b], y[b], A).predict(local, A)[:, 0] for b in range(B)])

    print(f"{'method':28s} {'batch':>6s} {'fits/s':>9s} {'x sklearn':>10s} {'x ikpls':>8s} {'max rel diff':>13s}")
    t_sk, ref = best_time(sklearn_loop, args.repeat)
    t_ik, pred_ik = best_time(ikpls_loop, args.repeat)
    scale = np.abs(ref).max()

    ref_rmse = np.sqrt(np.mean((ref - local_y) ** 2, axis=1))

    def row(name, batch, elapsed, pred, rmse=False):
        diff = np.abs(pred / ref_rmse - 1).max() if rmse else np.abs(pred - ref).max() / scale
        print(f"{name:28s} {batch:>6s} {B / elapsed:9.0f} {t_sk / elapsed:10.1f} {t_ik / elapsed:8.1f} {diff:13.1e}"
              + (" (RMSE)" if rmse else ""))

    row("scikit-learn loop", "-", t_sk, ref)
    row("ikpls loop (numpy, alg. 1)", "-", t_ik, pred_ik)
    for threads in args.threads:
        torch.set_num_threads(threads)
        for dtype in ("float64", "float32"):
            Xt, yt, lt = (torch.as_tensor(a, dtype=getattr(torch, dtype)) for a in (X, y, local))
            for batch in args.batches:
                def ours(batch=batch):
                    parts = [pls1_fit_predict(Xt[i : i + batch], yt[i : i + batch], lt, A) for i in range(0, B, batch)]
                    return torch.cat(parts)
                ours()  # warm-up
                elapsed, pred = best_time(ours, args.repeat)
                row(f"dtl_dist {dtype}, {threads} thr.", str(batch), elapsed, pred.double().numpy())
    def threaded(fit_predict, Xt, yt, lt):
        def chunk(i):
            torch.set_num_threads(1)  # per calling thread
            return fit_predict(Xt[i : i + CHUNK], yt[i : i + CHUNK], lt)

        def run():
            with ThreadPoolExecutor(args.workers) as pool:
                return torch.cat(list(pool.map(chunk, range(0, B, CHUNK))))

        run()  # warm-up
        return best_time(run, args.repeat)

    for dtype in ("float64", "float32"):
        Xt, yt, lt = (torch.as_tensor(a, dtype=getattr(torch, dtype)) for a in (X, y, local))
        elapsed, pred = threaded(lambda Xb, yb, lb: pls1_fit_predict(Xb, yb, lb, A), Xt, yt, lt)
        row(f"dtl_dist {dtype}, {args.workers}x1 thr.", str(CHUNK), elapsed, pred.double().numpy())
    Xt, yt, lt = (torch.as_tensor(a, dtype=torch.float32) for a in (X, y, local))
    transposed, pls_kernel._transposed = pls_kernel._transposed, _torch_transposed
    try:
        elapsed, pred = threaded(lambda Xb, yb, lb: pls1_fit_predict(Xb, yb, lb, A), Xt, yt, lt)
    finally:
        pls_kernel._transposed = transposed
    row(f"before: torch transpose, {args.workers}x1", str(CHUNK), elapsed, pred.double().numpy())
    for split, name in ((0, "Gram, float32 K"), (GRAM_SPLIT, f"Gram, split K (rank {GRAM_SPLIT})")):
        elapsed, pred = threaded(lambda Xb, yb, lb, split=split: gram_fit_predict(Xb, yb, lb, A, split), Xt, yt, lt)
        row(f"{name}, {args.workers}x1", str(CHUNK), elapsed, pred.numpy())
    compile_s, compiled32 = compiled_rows(args, row, lib_X, lib_y, lib_idx, local, local_y)
    sk32 = [a.astype(np.float32).astype(np.float64) for a in (X, y, local, local_y)]
    sk32_rmse = np.sqrt(np.mean((np.stack([PLSRegression(A, scale=False).fit(sk32[0][b], sk32[1][b]).predict(sk32[2])
                                           for b in range(B)]) - sk32[3]) ** 2, axis=1))
    print("compiled kernel, first call (compile, or load numba's cache) " +
          ", ".join(f"{dtype} {s:.2f} s" for dtype, s in compile_s.items()))
    print(f"scikit-learn on the spectra and targets rounded to float32: max rel RMSE diff "
          f"{np.abs(sk32_rmse / ref_rmse - 1).max():.1e} from its float64 fit; compiled float32 from it: "
          f"{np.abs(compiled32 / sk32_rmse - 1).max():.1e}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


def compiled_rows(args, row, lib_X, lib_y, idx, local, local_y) -> tuple[dict, np.ndarray]:
    """The compiled kernel's rows: one call on one thread, and 2x1 (each Python thread scores its own share of
    the subsets, ``CHUNK`` per call, as RS-LOCAL does); then the float32-accumulation variant (2x1). Returns the
    first-call seconds per dtype and the float32 scores."""
    B, A, workers, compile_s, scores = len(idx), args.ncomp, args.workers, {}, {}

    def shares(score):
        def share(h):
            lo, hi = h * B // workers, (h + 1) * B // workers
            return np.concatenate([score(idx[i:min(i + CHUNK, hi)]) for i in range(lo, hi, CHUNK)])

        with ThreadPoolExecutor(workers) as pool:
            return np.concatenate(list(pool.map(share, range(workers))))

    for dtype, accumulate in (("float64", None), ("float32", None), ("float32", np.float32)):
        Xl, yl, Ll, lyl = (np.ascontiguousarray(a, dtype=dtype) for a in (lib_X, lib_y, local, local_y))

        def score(rows):
            return pls_compiled.subset_scores(Xl, rows, yl, Ll, lyl, A)

        saved = dict(pls_compiled._ACCUMULATE)
        try:
            if accumulate:
                pls_compiled._ACCUMULATE[np.dtype(dtype)] = accumulate
                score(idx[:1])  # compile
                elapsed, threaded = best_time(lambda: shares(score), args.repeat)
                row(f"compiled f32 (f32 acc.), {workers}x1", str(CHUNK), elapsed, threaded, rmse=True)
                continue
            start = time.perf_counter()
            score(idx[:1])
            compile_s[dtype] = time.perf_counter() - start
            elapsed, scores[dtype] = best_time(lambda: score(idx), args.repeat)
            row(f"compiled {dtype}, 1 thr.", str(B), elapsed, scores[dtype], rmse=True)
            elapsed, threaded = best_time(lambda: shares(score), args.repeat)
            assert np.array_equal(threaded, scores[dtype]), "the compiled scores depend on the threads"
            row(f"compiled {dtype}, {workers}x1 thr.", str(CHUNK), elapsed, threaded, rmse=True)
        finally:
            pls_compiled._ACCUMULATE.clear()
            pls_compiled._ACCUMULATE.update(saved)
    return compile_s, scores["float32"]


if __name__ == "__main__":
    main()
