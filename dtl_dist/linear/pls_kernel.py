"""Batched PLS1 regression in torch: fit and predict thousands of small subsets per call.

RS-LOCAL-v2.0 (Shen et al. 2022, section 2.3.2; Lobsey et al. 2017) fits a partial least squares
regression (PLSR) on every random subset of the spectral library it draws and scores it on the ``n``
local_labelled samples, so it needs many small PLS fits (subsets of ~100 spectra x 211 bands) rather
than one large one. This module fits a whole batch of subsets at once, on the CPU or a GPU; it serves the PLS
baselines (components by cross-validation, :func:`pls1_cv_ncomp`) and the models that keep their loadings. On
the CPU, RS-LOCAL's subset scores come from the compiled kernel of :mod:`dtl_dist.linear.pls_compiled`, which
computes the same NIPALS per subset 4-6x faster (bench_pls).

Algorithm
---------
NIPALS for one response (PLS1), vectorised over the batch. The x-weights of component ``k`` are
``w_k = X_k' y_k / ||X_k' y_k||`` with ``X_k = H_k Xc`` the deflated centred spectra and ``H_k`` the
projector orthogonal to the previous scores. Because ``y_k`` is already orthogonal to those scores,
``X_k' y_k = Xc' y_k`` and ``t_k = X_k w_k = H_k Xc w_k``: only the response is deflated
(``y_{k+1} = y_k - q_k t_k``) and ``X`` is never rewritten. Each component costs two batched
matrix-vector products with the block's spectra (kept in cache, in both memory layouts) and a
Gram-Schmidt step against the previous scores; the loadings ``P = Xc' T / diag(T'T)`` come from one
batched product at the end, and ``coef = W (P'W)^-1 q`` from a triangular solve (``P'W`` is unit upper
triangular). Signs follow scikit-learn (the largest-magnitude entry of each weight vector is
positive), so weights, loadings and scores equal ``PLSRegression(scale=False)``'s.

A kernel form on the ``m x m`` Gram matrix ``Xc Xc'`` was measured as fast on one core but squares the
condition number: in float32 its predictions drifted from scikit-learn's by 8e-4 (15 components) and 0.2
(20 components) of the largest prediction on Geeves spectra, where this form stays within 1e-5 on the same
subsets (worst case 7e-4 over 4096 subsets at 10 components, see bench_pls; float64: 1e-12).

Rank: when ``ncomp`` exceeds the rank of a subset's centred spectra (or the response has no component
left in them), the next weight ``Xc' y_k`` or score ``t_k`` falls to the rounding level of a product
with ``Xc`` (``m * eps * ||Xc||_F``). That component and all later ones are then dropped for that
subset: their weights, loadings and ``y_loadings`` are zero, and its model equals the one with fewer
components (scikit-learn stops with a "y residual is constant" warning, or raises for
``ncomp > min(m, p)``).

Batches are processed in blocks of about 2 MB of spectra on the CPU, which keeps each block in cache.
A subset's result does not depend on the other subsets, but the batched BLAS calls may round
differently for another batch size (1e-16 relative in float64, 1e-7 in float32): for bit-identical
results, keep the batches the same.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from sklearn.model_selection import KFold

from dtl_dist.devices import resolve_device
from dtl_dist.errors import UserInputError

_CPU_BLOCK_BYTES = 2 * 2**20
"""Spectra per block on the CPU (bytes): the block and its transpose stay in cache (bench_pls)."""
_GPU_BLOCK_BYTES = 2**30
"""Spectra per block on a GPU (bytes)."""


class PLS1Fit(NamedTuple):
    """PLS1 models of a batch of ``B`` subsets (torch tensors on one device and dtype).

    Attributes
    ----------
    x_mean : (B, p) column means of each subset's spectra.
    y_mean : (B,) mean response of each subset.
    weights : (B, p, A) x-weights ``W`` (orthonormal columns; zero beyond the subset's rank).
    x_loadings : (B, p, A) x-loadings ``P``.
    y_loadings : (B, A) y-loadings ``q``.
    coef : (B, p) regression coefficients: ``prediction = (X_new - x_mean) @ coef + y_mean``.
    """

    x_mean: torch.Tensor
    y_mean: torch.Tensor
    weights: torch.Tensor
    x_loadings: torch.Tensor
    y_loadings: torch.Tensor
    coef: torch.Tensor

    @property
    def x_rotations(self) -> torch.Tensor:
        """(B, p, A) ``W (P'W)^-1``: maps centred spectra to x-scores (scikit-learn's ``x_rotations_``)."""
        return _rotations(self.weights, self.x_loadings)


def pls1_fit(X, y, ncomp: int, *, dtype=None, device=None) -> PLS1Fit:
    """Fit one PLS1 model with ``ncomp`` components to each of ``B`` subsets.

    Parameters
    ----------
    X : array or tensor (B, m, p)
        Spectra of each subset (``m`` samples, ``p`` bands).
    y : array or tensor (B, m)
        Response of each subset.
    ncomp : int
        Number of PLS components (``>= 1``); a subset of lower rank gets fewer (see module notes).
    dtype : torch.float32, torch.float64, "float32", "float64" or None
        Working precision; None keeps a float32 input in float32 and uses float64 otherwise.
    device : torch device or str, optional
        Where to compute; default: ``X``'s device for a tensor, else the task's
        (:func:`dtl_dist.devices.task_device`: ``cuda`` when the engine gave the task a GPU, else the CPU).

    Returns
    -------
    PLS1Fit
        Centring means, weights, loadings and coefficients, as scikit-learn's
        ``PLSRegression(n_components=ncomp, scale=False)`` would give for each subset.

    References
    ----------
    Shen et al. (2022), section 2.3.2 (RS-LOCAL-v2.0 fits PLSR models on library subsets).
    Wold, Sjostrom & Eriksson (2001), PLS-regression: a basic tool of chemometrics, Chemom. Intell. Lab. Syst. 58.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(8, 20, 5)), rng.normal(size=(8, 20))
    >>> fit = pls1_fit(X, y, 3)
    >>> tuple(fit.coef.shape), tuple(fit.weights.shape)
    ((8, 5), (8, 5, 3))
    """
    dtype = _resolve_dtype(dtype, X)
    X = _as_tensor(X, "X", dtype, device)
    y = _as_tensor(y, "y", dtype, X.device)
    if X.ndim != 3 or y.ndim != 2 or y.shape != X.shape[:2] or X.shape[0] == 0:
        raise UserInputError(
            f"pls1_fit: expected X of shape (B, m, p) and y of shape (B, m), got {tuple(X.shape)} and {tuple(y.shape)}"
        )
    if X.shape[1] < 2:
        raise UserInputError(f"pls1_fit: each subset needs at least 2 samples, got m={X.shape[1]}")
    ncomp = _check_ncomp(ncomp)
    block_bytes = _CPU_BLOCK_BYTES if X.device.type == "cpu" else _GPU_BLOCK_BYTES
    block = max(1, block_bytes // (X.shape[1] * X.shape[2] * X.element_size()))
    parts = [_fit_block(X[i : i + block], y[i : i + block], ncomp) for i in range(0, X.shape[0], block)]
    fit = PLS1Fit(*(torch.cat(field) for field in zip(*parts)))
    # NaN or infinity anywhere in a subset reaches its means: checking them costs no pass over X.
    _check_finite(fit.x_mean, "X")
    _check_finite(fit.y_mean, "y")
    return fit


def pls1_predict(fit: PLS1Fit, X_new):
    """Predict new spectra with every subset's model.

    Parameters
    ----------
    fit : PLS1Fit
    X_new : array or tensor (q, p) shared by all subsets, or (B, q, p) one set per subset.

    Returns
    -------
    (B, q) predictions; numpy when ``X_new`` is numpy, else a tensor on the fit's device.
    """
    Xn = _new_samples(fit, X_new)
    if Xn.ndim == 2:
        # Centre on a reference common to all subsets so one GEMM serves the batch without the
        # cancellation of X_new @ coef - x_mean @ coef (matters in float32).
        ref = fit.x_mean.mean(0)
        pred = ((Xn - ref) @ fit.coef.T).T - ((fit.x_mean - ref) * fit.coef).sum(1, keepdim=True)
    else:
        pred = ((Xn - fit.x_mean[:, None]) @ fit.coef[:, :, None])[:, :, 0]
    return _like(pred + fit.y_mean[:, None], X_new)


def pls1_transform(fit: PLS1Fit, X_new):
    """X-scores of new spectra in each subset's PLS space: ``(X_new - x_mean) W (P'W)^-1``.

    Parameters
    ----------
    fit : PLS1Fit
    X_new : array or tensor (q, p) shared by all subsets, or (B, q, p).

    Returns
    -------
    (B, q, A) scores (scikit-learn's ``transform``); numpy when ``X_new`` is numpy.
    """
    Xn = _new_samples(fit, X_new)
    R = fit.x_rotations
    if Xn.ndim == 2:
        ref = fit.x_mean.mean(0)
        scores = torch.einsum("qp,bpa->bqa", Xn - ref, R) - ((fit.x_mean - ref)[:, None] @ R)
    else:
        scores = (Xn - fit.x_mean[:, None]) @ R
    return _like(scores, X_new)


def pls1_fit_predict(X, y, X_new, ncomp: int, **kw):
    """``pls1_predict(pls1_fit(X, y, ncomp, **kw), X_new)``: (B, q) predictions."""
    return pls1_predict(pls1_fit(X, y, ncomp, **kw), X_new)


def pls1_cv_ncomp(X, y, max_ncomp: int = 20, folds=10, seed: int = 0, *, dtype=None, device=None):
    """Choose the number of PLS components by ``folds``-fold cross-validation.

    The folds are ``sklearn.model_selection.KFold(folds, shuffle=True, random_state=seed)``, or the given
    ``(train, test)`` row index pairs (rows may repeat in a training part, e.g. replicated samples); all
    folds are fitted in one batched call per training size with ``max_ncomp`` components, and the models with
    ``1 .. max_ncomp`` components are read off the nested PLS solution.

    Parameters
    ----------
    X : array or tensor (n, p)
    y : array or tensor (n,)
    max_ncomp : int
        Largest number of components tried; beyond a fold's rank the extra components are empty.
    folds : int or list of (train, test) index arrays
        Number of folds (``2 <= folds <= n``), or the splits themselves (the RMSE pools their test rows).
    seed : int
        Seed of the fold shuffle.

    Returns
    -------
    best_ncomp : int
        The number of components with the smallest cross-validated RMSE (the fewest on a tie).
    cv_rmse : ndarray (max_ncomp,)
        Pooled RMSE of the held-out predictions for ``1 .. max_ncomp`` components.

    References
    ----------
    Shen et al. (2022), sections 2.3.2 and 2.4 (10-fold cross-validation of the local models).
    """
    dtype = _resolve_dtype(dtype, X)
    X = _as_tensor(X, "X", dtype, device)
    y = _as_tensor(y, "y", dtype, X.device)
    if X.ndim != 2 or y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise UserInputError(
            f"pls1_cv_ncomp: expected X of shape (n, p) and y of shape (n,), got {tuple(X.shape)} and {tuple(y.shape)}"
        )
    n = X.shape[0]
    max_ncomp = _check_ncomp(max_ncomp, "max_ncomp")
    if isinstance(folds, (list, tuple)):
        splits = [(np.asarray(tr, dtype=np.int64), np.asarray(te, dtype=np.int64)) for tr, te in folds]
    elif isinstance(folds, bool) or not (isinstance(folds, (int, np.integer)) and 2 <= folds <= n):
        raise UserInputError(f"pls1_cv_ncomp: folds={folds!r}; expected an integer from 2 to the {n} samples")
    else:
        splits = list(KFold(int(folds), shuffle=True, random_state=seed).split(np.arange(n)))
    n = sum(len(te) for _, te in splits)
    sse = torch.zeros(max_ncomp, dtype=dtype, device=X.device)
    for size in sorted({len(train) for train, _ in splits}):
        same = [(tr, te) for tr, te in splits if len(tr) == size]
        fit = pls1_fit(X[torch.as_tensor(np.stack([tr for tr, _ in same]), device=X.device)],
                       y[torch.as_tensor(np.stack([tr for tr, _ in same]), device=X.device)], max_ncomp)
        for b, (_, te) in enumerate(same):  # test parts may differ in size
            test = torch.as_tensor(te, device=X.device)
            sse += ((pls1_predict_ncomps(fit, X[test], b) - y[test][:, None]) ** 2).sum(0)
    cv_rmse = torch.sqrt(sse / n).cpu().numpy()
    return int(np.argmin(cv_rmse)) + 1, cv_rmse


def pls1_predict_ncomps(fit: PLS1Fit, X_new: torch.Tensor, b: int = 0) -> torch.Tensor:
    """Predictions of subset ``b``'s models with ``1 .. A`` components, shape ``(q, A)``: the first ``a``
    components of an A-component PLS1 are the a-component model (nested solution)."""
    scores = (X_new - fit.x_mean[b]) @ fit.x_rotations[b]
    return fit.y_mean[b] + torch.cumsum(scores * fit.y_loadings[b], 1)


def _fit_block(X: torch.Tensor, y: torch.Tensor, ncomp: int) -> PLS1Fit:
    """NIPALS PLS1 on one block of subsets, deflating ``y`` instead of ``X`` (see the module notes)."""
    B, m, p = X.shape
    x_mean = X.mean(1)
    Xc = X - x_mean[:, None]
    Xct = _transposed(Xc)  # row-vector @ matrix products run at cache speed in both directions
    y_mean = y.mean(1)
    u = y - y_mean[:, None]
    tiny = torch.finfo(X.dtype).tiny
    Tn = X.new_zeros(B, ncomp, m)  # x-scores scaled to unit length, one row per component
    W, ww, uu, tt, qn = [], [], [], [], []
    for k in range(ncomp):
        w = (u[:, None] @ Xc)[:, 0]  # X_k' y_k = Xc' y_k: y_k is orthogonal to the previous scores
        ww.append(torch.linalg.vecdot(w, w))
        uu.append(torch.linalg.vecdot(u, u))
        W.append(w * ww[-1].clamp_min(tiny).rsqrt()[:, None])
        t = W[-1][:, None] @ Xct
        if k:  # t_k = X_k w_k = H_k Xc w_k
            t = t - (t @ Tn[:, :k].mT) @ Tn[:, :k]
        tt.append(torch.linalg.vecdot(t[:, 0], t[:, 0]))
        Tn[:, k] = t[:, 0] * tt[-1].clamp_min(tiny).rsqrt()[:, None]
        qn.append(torch.linalg.vecdot(u, Tn[:, k]))
        u = u - Tn[:, k] * qn[-1][:, None]
    ww, uu, tt, qn = (torch.stack(v, 1) for v in (ww, uu, tt, qn))
    # A weight or score below the rounding level of a product with Xc is not signal: the subset's rank
    # is exhausted, and that component and all later ones are dropped.
    floor = (m * torch.finfo(X.dtype).eps * torch.linalg.vector_norm(Xc.flatten(1), dim=1)).square()[:, None]
    active = ((ww > floor * uu) & (tt > floor)).to(X.dtype).cumprod(1)
    t_norm = torch.where(active > 0, tt, 1).sqrt()
    W = torch.stack(W, 2) * active[:, None]
    P = (Tn @ Xc).mT * (active / t_norm)[:, None]
    q = qn * active / t_norm
    # scikit-learn's sign convention: the largest-magnitude entry of each weight vector is positive.
    sign = torch.where(W.gather(1, W.abs().argmax(1, keepdim=True)) < 0, -1.0, 1.0).to(X.dtype)
    W, P, q = W * sign, P * sign, q * sign[:, 0]
    coef = (_rotations(W, P) @ q[:, :, None])[:, :, 0]
    return PLS1Fit(x_mean, y_mean, W, P, q, coef)


def _transposed(Xc: torch.Tensor) -> torch.Tensor:
    """``Xc.mT`` as a contiguous tensor; on the CPU numpy's blocked transpose copies 2.5x faster than torch's
    strided copy (bench_pls), with the same values."""
    if Xc.device.type != "cpu":
        return Xc.mT.contiguous()
    return torch.from_numpy(np.ascontiguousarray(Xc.numpy().transpose(0, 2, 1)))


def _rotations(W: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """``W (P'W)^-1``; ``P'W`` is unit upper triangular, its empty (beyond-rank) components give zero columns."""
    M = P.mT @ W
    M = M + torch.diag_embed((M.diagonal(dim1=1, dim2=2) == 0).to(M.dtype))
    return torch.linalg.solve_triangular(M, W, upper=True, left=False)


def _check_ncomp(ncomp, name: str = "ncomp") -> int:
    if isinstance(ncomp, bool) or not isinstance(ncomp, (int, np.integer)) or ncomp < 1:
        raise UserInputError(f"{name}={ncomp!r}: expected a positive integer number of PLS components")
    return int(ncomp)


def _resolve_dtype(dtype, like) -> torch.dtype:
    if dtype is None:
        return torch.float32 if getattr(like, "dtype", None) in (torch.float32, np.dtype(np.float32)) else torch.float64
    resolved = {"float32": torch.float32, "float64": torch.float64}.get(dtype, dtype)
    if resolved not in (torch.float32, torch.float64):
        raise UserInputError(f"dtype={dtype!r}: expected float32 or float64")
    return resolved


def _as_tensor(a, name: str, dtype: torch.dtype, device) -> torch.Tensor:
    """``a`` as a tensor of ``dtype`` on ``device`` (None: a tensor's own device, else the task's)."""
    if isinstance(a, torch.Tensor):
        return a.to(device=device if device is not None else a.device, dtype=dtype)
    try:
        arr = np.asarray(a, dtype=np.float64 if dtype == torch.float64 else np.float32)
    except (TypeError, ValueError) as err:
        raise UserInputError(f"{name}: expected a numeric array ({err})") from None
    return torch.as_tensor(arr if arr.flags.writeable else arr.copy(), device=resolve_device(device))


def _check_finite(t: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise UserInputError(f"{name}: contains NaN or infinite values; PLS needs finite spectra and responses")


def _new_samples(fit: PLS1Fit, X_new) -> torch.Tensor:
    Xn = _as_tensor(X_new, "X_new", fit.coef.dtype, fit.coef.device)
    _check_finite(Xn, "X_new")
    B, p = fit.coef.shape
    if not (Xn.ndim == 2 and Xn.shape[1] == p or Xn.ndim == 3 and Xn.shape[0] == B and Xn.shape[2] == p):
        raise UserInputError(f"X_new: expected shape (q, {p}) or ({B}, q, {p}), got {tuple(Xn.shape)}")
    return Xn


def _like(result: torch.Tensor, template):
    return result if isinstance(template, torch.Tensor) else result.cpu().numpy()
