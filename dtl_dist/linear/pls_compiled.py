"""Compiled PLS1 fit-and-score of library subsets for RS-LOCAL (numba; Shen et al. 2022, section 2.3.2).

RS-LOCAL-v2.0 fits a PLS1 model on each random library subset it draws (m ~ 100 spectra x p ~ 211 bands,
~10 components) and scores it on the site's local samples. :func:`subset_scores` does gather, fit and score of
every subset in one compiled call that releases the GIL, without a Python call per step: two Python threads
each calling it on their own subsets keep two cores busy.

Algorithm (per subset; the same as :mod:`dtl_dist.linear.pls_kernel`, whose notes give the reasoning)
-----------------------------------------------------------------------------------------------------
The subset's rows of ``X`` are gathered into a contiguous buffer ``Xc`` and centred on their means (``y``
likewise; corrected two-pass centring, so that the rounding of the mean does not shift all rows alike: see
:func:`_gather_centre`), and the buffer is also transposed (``XcT``) so that both matrix-vector products of
NIPALS run as contiguous axpy loops over four rows at a time (no floating-point reassociation is needed for LLVM
to vectorise them; buffers are allocated once per call). NIPALS for one
response deflating ``y`` only: ``w_k = Xc' u_k / ||Xc' u_k||``, raw score ``s_k = Xc w_k``, classical
Gram-Schmidt ``t_k = s_k - sum_a c_ak tn_a`` with ``c_ak = tn_a . s_k`` against the previous normalised scores
``tn_a = t_a / ||t_a||``, ``qn_k = u_k . tn_k`` and ``u_{k+1} = u_k - qn_k tn_k``.

Rank: a component whose ``||w||^2 <= floor ||u||^2`` or ``||t||^2 <= floor``, with
``floor = (m eps ||Xc||_F)^2`` (``eps`` of the data's dtype), and all later ones are dropped, as in the torch
kernel: the loop stops there and the model has ``K <= ncomp`` components.

Coefficients without a pass for the loadings: with ``C`` the upper triangular ``K x K`` matrix of the
Gram-Schmidt coefficients ``C[a, k] = c_ak`` (``a < k``) and ``C[k, k] = ||t_k||``, ``P'W = D^-1 C`` and
``q = D^-1 qn`` (``D = diag ||t_k||``), so ``coef = W (P'W)^-1 q = W C^-1 qn``; scikit-learn's scores are
``T = Xc W (P'W)^-1 = Tn D`` and its loadings ``P = Xc' Tn D^-1``.

Criteria (as RS-LOCAL computed them with the torch kernel before this one):

- ``"rmse"``: ``sqrt(mean((local_X - x_mean) coef + y_mean - local_y)^2)``.
- ``"reconstruction"``: RMS of ``Lc - T_local P'`` over all local samples and bands (``Lc = local_X - x_mean``,
  ``T_local P' = (Lc W' C^-1) (Xc' Tn')'``); needs ``Xc' Tn'``, one more pass over ``Xc`` per component.
- ``"mahalanobis"``: distance between the local and subset score centroids with the subset score covariance,
  computed in the basis ``T D^-1`` (the distance is invariant under an invertible linear map of the scores):
  subset scores ``Tn'`` (orthonormal columns: a well-conditioned covariance), local centroid
  ``(mean(local_X) - x_mean) W' C^-1``; +inf when the covariance is singular (an exactly zero pivot of the LU
  factorisation with partial pivoting, or fewer than ``ncomp`` components: a dropped component is a zero column
  of the torch kernel's scores).

Precision: float64 data is computed in float64. Float32 data is gathered, centred and kept in float32 (half
the bytes per pass) and every product accumulates in float64: on bench_pls's Geeves case its RMSEs are within
1e-5 of scikit-learn fitted on the same float32 data (rounding the data to float32 alone moves scikit-learn's
own RMSE by up to 6e-4 on 1 of 4,096 subsets). Float32 accumulation (``_ACCUMULATE``; bench_pls prints it) was
~15 % faster but 1.7e-3 off. Float64 storage of float32 data: exact to 1e-12, ~15 % slower.
Sums are evaluated in a fixed order, so a subset's score is bitwise the same whatever the batch it comes
in, the split of a batch into calls and the thread that computes it. Signs of weights and scores (scikit-learn
makes each weight's largest entry positive) do not change any score and are not fixed.

Compilation: the first call per dtype in a fresh environment compiles (a few seconds, cached next to this
module: later processes load it in well under a second); call :func:`warm_up` in the main thread before
starting threads so they do not wait on each other's compilation.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dtl_dist.errors import UserInputError

CRITERIA = ("rmse", "reconstruction", "mahalanobis")
"""Scores (lower is better), as in :mod:`dtl_dist.select.rslocal`."""

_ACCUMULATE = {np.dtype(np.float32): np.float64, np.dtype(np.float64): np.float64}
"""Dtype of the vectors (weights, scores, response) and of every accumulation, per data dtype."""

_JIT = dict(nogil=True, cache=__name__ == "dtl_dist.linear.pls_compiled", fastmath=False)
"""numba options of every kernel function. The cache (next to this file) is keyed by file, not module name: an
import of this file under another name (e.g. ``python -m doctest path/to/pls_compiled.py``) writes entries the
package cannot load, so only the package's own import caches."""


def subset_scores(X, subsets, y, local_X, local_y, ncomp: int, criterion: str = "rmse") -> np.ndarray:
    """Score PLS1 models of library subsets on the site's local samples (lower is better).

    Parameters
    ----------
    X : ndarray (N, p), float32 or float64
        Library spectra (already preprocessed); pass them C-contiguous (anything else is copied per call, other
        dtypes to float64).
    subsets : ndarray (B, m) of integers
        Row indices into ``X``, one subset per row (``m >= 2``).
    y : ndarray (N,)
        Library targets (converted to ``X``'s dtype: pass them in it, or each call pays a copy of ``N`` values).
    local_X : ndarray (n, p)
        The site's local spectra (converted to ``X``'s dtype).
    local_y : ndarray (n,) or None
        Their values (criterion "rmse"; ignored otherwise).
    ncomp : int
        PLS components (``>= 1``); a subset of lower rank gets fewer (see the module notes).
    criterion : "rmse" | "reconstruction" | "mahalanobis"

    Returns
    -------
    ndarray (B,), float64; a subset whose score is not finite (e.g. NaN in its spectra) gets +inf.

    References
    ----------
    Shen et al. (2022), section 2.3.2; Wold, Sjostrom & Eriksson (2001), Chemom. Intell. Lab. Syst. 58.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(50, 8)), rng.normal(size=50)
    >>> subset_scores(X, rng.integers(0, 50, (4, 20)), y, X[:5], y[:5], 3).shape
    (4,)
    """
    X, idx, y, LT, ly, ncomp, code = _checked(X, subsets, y, local_X, local_y, ncomp, criterion)
    out = np.empty(idx.shape[0])
    if idx.shape[0]:
        acc = np.zeros(1, _ACCUMULATE[X.dtype])
        _scores(X, idx, y, LT, ly, ncomp, code, float(np.finfo(X.dtype).eps), acc, out)
    return out


def warm_up(dtypes=(np.float32, np.float64)) -> None:
    """Compile (or load from the cache) the kernel for ``dtypes``: call once before scoring from threads."""
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        X = rng.normal(size=(8, 5)).astype(dtype)
        subset_scores(X, np.arange(8).reshape(2, 4), X[:, 0], X[:3], X[:3, 1], 2)


def _checked(X, subsets, y, local_X, local_y, ncomp, criterion):
    """Validated, converted arguments of :func:`subset_scores` (one-line UserInputError otherwise)."""
    if criterion not in CRITERIA:
        raise UserInputError(f"criterion={criterion!r}: expected one of {', '.join(CRITERIA)}")
    if isinstance(ncomp, bool) or not isinstance(ncomp, (int, np.integer)) or ncomp < 1:
        raise UserInputError(f"ncomp={ncomp!r}: expected a positive integer number of PLS components")
    dtype = X.dtype if isinstance(X, np.ndarray) and X.dtype in _ACCUMULATE else np.float64
    X = _float(X, "X", dtype, (-1, -1))  # a copy unless already C-contiguous float32 / float64
    N, p = X.shape
    if N < 1 or p < 1:
        raise UserInputError(f"X: expected spectra of shape (N, p), got {X.shape}")
    idx = np.asarray(subsets)
    if idx.ndim != 2 or idx.shape[1] < 2 or not np.issubdtype(idx.dtype, np.integer):
        raise UserInputError(f"subsets: expected integer row indices of shape (B, m) with m >= 2, got {idx.dtype} "
                             f"array of shape {idx.shape}")
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= N):
        raise UserInputError(f"subsets: row indices must lie in [0, {N}), got {idx.min()} .. {idx.max()}")
    y = _float(y, "y", X.dtype, (N,))
    L = _float(local_X, "local_X", X.dtype, (-1, p))
    if L.shape[0] < 1 or not np.isfinite(L).all():
        raise UserInputError(f"local_X: expected at least one finite spectrum of {p} bands")
    if criterion == "rmse":
        if local_y is None:
            raise UserInputError('local_y: criterion "rmse" needs the local values')
        ly = _float(local_y, "local_y", X.dtype, (L.shape[0],)).astype(np.float64)
        if not np.isfinite(ly).all():
            raise UserInputError("local_y: contains NaN or infinite values")
    else:
        ly = np.zeros(L.shape[0])
    LT = np.ascontiguousarray(L.T, dtype=np.float64)  # (p, n): the local spectra as float64 columns
    return X, idx, y, LT, ly, int(ncomp), CRITERIA.index(criterion)


def _float(a, name, dtype, shape):
    try:
        arr = np.ascontiguousarray(a, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise UserInputError(f"{name}: expected a numeric array ({err})") from None
    if arr.ndim != len(shape) or any(s not in (-1, t) for s, t in zip(shape, arr.shape)):
        want = "(" + ", ".join("n" if s == -1 else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        want = "(N, p)" if shape == (-1, -1) else want
        raise UserInputError(f"{name}: expected shape {want}, got {arr.shape}")
    return arr


@njit(**_JIT)
def _dot(a, b, n):
    """``sum(a[:n] * b[:n])`` in float64, in eight partial sums (a fixed order)."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    n8 = n - n % 8
    for j in range(0, n8, 8):
        s0 += float(a[j]) * float(b[j])
        s1 += float(a[j + 1]) * float(b[j + 1])
        s2 += float(a[j + 2]) * float(b[j + 2])
        s3 += float(a[j + 3]) * float(b[j + 3])
        s4 += float(a[j + 4]) * float(b[j + 4])
        s5 += float(a[j + 5]) * float(b[j + 5])
        s6 += float(a[j + 6]) * float(b[j + 6])
        s7 += float(a[j + 7]) * float(b[j + 7])
    for j in range(n8, n):
        s0 += float(a[j]) * float(b[j])
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(**_JIT)
def _rows_times(A, v, out):
    """``out = A' v`` for a C-contiguous ``A`` (r, c): axpy of four rows at a time over ``c``."""
    r, c = A.shape
    for j in range(c):
        out[j] = 0.0
    i = 0
    while i + 4 <= r:
        v0, v1, v2, v3 = v[i], v[i + 1], v[i + 2], v[i + 3]
        a0, a1, a2, a3 = A[i], A[i + 1], A[i + 2], A[i + 3]
        for j in range(c):
            out[j] += v0 * a0[j] + v1 * a1[j] + v2 * a2[j] + v3 * a3[j]
        i += 4
    while i < r:
        v0, a0 = v[i], A[i]
        for j in range(c):
            out[j] += v0 * a0[j]
        i += 1


@njit(**_JIT)
def _gather_centre(X, rows, y, Xc, XcT, mean, col, sq, u):
    """Gather ``X[rows]`` into ``Xc``, centre it on its column means (into ``mean``) and transpose it into
    ``XcT``; ``u`` = the centred targets. Returns ``(y_mean, ||Xc||_F)``; ``col`` and ``sq`` are scratch.

    Centring is the corrected two-pass form: ``(x - mean_1) - mean(x - mean_1)``. The rounding of ``mean_1``
    would otherwise shift every row by the same ``eps |x|`` (a constant direction in sample space that the rank
    floor, relative to ``||Xc||``, does not see when the subset's spectra are much alike: e.g. two distinct
    spectra repeated, where NIPALS would fit that rounding as a second component)."""
    m, p = Xc.shape
    for j in range(p):
        mean[j] = 0.0
        col[j] = 0.0
        sq[j] = 0.0
    y_sum = 0.0
    for r in range(m):
        src, dst = X[rows[r]], Xc[r]
        for j in range(p):
            v = src[j]
            dst[j] = v
            mean[j] += v
        y_sum += y[rows[r]]
    for j in range(p):
        mean[j] /= m
    y_mean = y_sum / m
    for r in range(m):
        dst = Xc[r]
        for j in range(p):
            col[j] += dst[j] - mean[j]
    y_sum = 0.0
    for r in range(m):
        y_sum += y[rows[r]] - y_mean
    for j in range(p):
        col[j] /= m
    y_low = y_sum / m
    for r in range(m):
        u[r] = (y[rows[r]] - y_mean) - y_low
    for r in range(m):
        dst = Xc[r]
        for j in range(p):
            dst[j] = (dst[j] - mean[j]) - col[j]
            e = float(dst[j])
            sq[j] += e * e
    fro = 0.0
    for j in range(p):
        mean[j] += col[j]
        fro += sq[j]
    _transpose(Xc, XcT)
    return y_mean + y_low, np.sqrt(fro)


@njit(**_JIT)
def _transpose(A, AT):
    """``AT = A'``, one output row at a time (strided loads, contiguous stores: the fastest of the loop orders
    measured, 3 us for 100 x 209)."""
    r, c = A.shape
    for j in range(c):
        o = AT[j]
        for i in range(r):
            o[i] = A[i, j]


@njit(**_JIT)
def _solve_lu(M, d, K):
    """Solve ``M[:K, :K] x = d[:K]`` in place (``d`` becomes ``x``) by LU with partial pivoting (``M`` is
    overwritten); False when a pivot is exactly zero (singular)."""
    for k in range(K):
        piv, best = k, abs(M[k, k])
        for i in range(k + 1, K):
            if abs(M[i, k]) > best:
                piv, best = i, abs(M[i, k])
        if best == 0.0 or not np.isfinite(best):
            return False
        if piv != k:
            for j in range(K):
                M[k, j], M[piv, j] = M[piv, j], M[k, j]
            d[k], d[piv] = d[piv], d[k]
        for i in range(k + 1, K):
            f = M[i, k] / M[k, k]
            for j in range(k + 1, K):
                M[i, j] -= f * M[k, j]
            d[i] -= f * d[k]
    for k in range(K - 1, -1, -1):
        s = d[k]
        for j in range(k + 1, K):
            s -= M[k, j] * d[j]
        d[k] = s / M[k, k]
    return True


@njit(**_JIT)
def _scores(X, idx, y, LT, ly, ncomp, criterion, eps, acc, out):
    """Scores of the subsets ``idx`` (B, m) into ``out`` (B,): see the module notes. ``acc``: a one-element
    array of the accumulation dtype."""
    B, m = idx.shape
    p, n = LT.shape
    A = ncomp
    Xc = np.empty((m, p), X.dtype)
    XcT = np.empty((p, m), X.dtype)
    mean = np.empty(p)
    col = np.empty(p)
    sq = np.empty(p)
    u = np.empty(m, acc.dtype)
    t = np.empty(m, acc.dtype)
    s = np.empty(m, acc.dtype)
    W = np.empty((A, p), acc.dtype)
    Tn = np.empty((A, m), acc.dtype)
    C = np.zeros((A, A))
    qn = np.empty(A)
    z = np.empty(A)
    coef = np.empty(p)
    pred = np.empty(n)
    lmean = np.empty(p)
    for j in range(p):
        lmean[j] = 0.0
        for i in range(n):
            lmean[j] += LT[j, i]
        lmean[j] /= n
    Q = np.empty((A if criterion == 1 else 0, p))
    lc = np.empty(p)
    x = np.empty(A)
    d = np.empty(A)
    M = np.empty((A, A))
    tmean = np.empty(A)
    for b in range(B):
        rows = idx[b]
        y_mean, fro = _gather_centre(X, rows, y, Xc, XcT, mean, col, sq, u)
        if not (np.isfinite(y_mean) and np.isfinite(fro)):
            out[b] = np.inf
            continue
        floor = (m * eps * fro) ** 2
        K = 0
        for k in range(A):
            w = W[k]
            _rows_times(Xc, u, w)  # Xc' u_k
            ww, uu = _dot(w, w, p), _dot(u, u, m)
            if not ww > floor * uu:
                break
            inv = 1.0 / np.sqrt(ww)
            for j in range(p):
                w[j] *= inv
            _rows_times(XcT, w, s)  # raw score Xc w_k
            for i in range(m):
                t[i] = s[i]
            for a in range(k):
                c = _dot(Tn[a], s, m)
                C[a, k] = c
                tna = Tn[a]
                for i in range(m):
                    t[i] -= c * tna[i]
            tt = _dot(t, t, m)
            if not tt > floor:
                break
            tnorm = np.sqrt(tt)
            C[k, k] = tnorm
            tn = Tn[k]
            inv = 1.0 / tnorm
            for i in range(m):
                tn[i] = t[i] * inv
            qn[k] = _dot(u, tn, m)
            q = qn[k]
            for i in range(m):
                u[i] -= q * tn[i]
            K = k + 1
        if criterion == 0:
            # z = C^-1 qn (back substitution), coef = W' z
            for a in range(K - 1, -1, -1):
                v = qn[a]
                for c in range(a + 1, K):
                    v -= C[a, c] * z[c]
                z[a] = v / C[a, a]
            for j in range(p):
                coef[j] = 0.0
            for a in range(K):
                za, wa = z[a], W[a]
                for j in range(p):
                    coef[j] += za * wa[j]
            for i in range(n):
                pred[i] = 0.0
            j = 0
            while j + 4 <= p:
                c0, c1, c2, c3 = coef[j], coef[j + 1], coef[j + 2], coef[j + 3]
                m0, m1, m2, m3 = mean[j], mean[j + 1], mean[j + 2], mean[j + 3]
                l0, l1, l2, l3 = LT[j], LT[j + 1], LT[j + 2], LT[j + 3]
                for i in range(n):
                    pred[i] += c0 * (l0[i] - m0) + c1 * (l1[i] - m1) + c2 * (l2[i] - m2) + c3 * (l3[i] - m3)
                j += 4
            while j < p:
                c0, m0, l0 = coef[j], mean[j], LT[j]
                for i in range(n):
                    pred[i] += c0 * (l0[i] - m0)
                j += 1
            sse = 0.0
            for i in range(n):
                e = pred[i] + y_mean - ly[i]
                sse += e * e
            score = np.sqrt(sse / n)
        elif criterion == 1:
            for a in range(K):
                _rows_times(Xc, Tn[a], Q[a])  # Xc' tn_a = ||t_a|| p_a
            sse = 0.0
            for i in range(n):
                for j in range(p):
                    lc[j] = LT[j, i] - mean[j]
                # x = (lc W') C^-1: the local sample's scores over D
                for c in range(K):
                    v = _dot(lc, W[c], p)
                    for a in range(c):
                        v -= x[a] * C[a, c]
                    x[c] = v / C[c, c]
                for a in range(K):
                    xa, Qa = x[a], Q[a]
                    for j in range(p):
                        lc[j] -= xa * Qa[j]
                sse += _dot(lc, lc, p)
            score = np.sqrt(sse / (n * p))
        else:
            if K < A:
                out[b] = np.inf
                continue
            for a in range(A):
                tmean[a] = 0.0
                for i in range(m):
                    tmean[a] += Tn[a, i]
                tmean[a] /= m
            for a in range(A):
                for c in range(a + 1):
                    v = 0.0
                    for i in range(m):
                        v += (Tn[a, i] - tmean[a]) * (Tn[c, i] - tmean[c])
                    M[a, c] = M[c, a] = v / (m - 1)
            for j in range(p):
                col[j] = lmean[j] - mean[j]
            for c in range(A):
                v = _dot(col, W[c], p)
                for a in range(c):
                    v -= z[a] * C[a, c]
                z[c] = v / C[c, c]
            for a in range(A):
                z[a] -= tmean[a]
                d[a] = z[a]
            if _solve_lu(M, z, A):  # z = cov^-1 d
                v = 0.0
                for a in range(A):
                    v += d[a] * z[a]
                score = np.sqrt(max(v, 0.0))
            else:
                score = np.inf
        out[b] = score if np.isfinite(score) else np.inf
