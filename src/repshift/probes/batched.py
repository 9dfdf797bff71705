"""Batched L2 logistic regression: many problems that share one feature matrix, fit at once.

Hand-written because no library fits many logistic regressions over one X in one pass (scikit-learn fits one
problem per call, each a memory-bound pass over X per iteration); here every iteration of all B problems is two
GEMMs, ``X @ W_all`` and ``X.T @ R_all`` with ``W_all`` of shape (d, B * K), which are compute-bound.

Problem ``b`` minimises exactly scikit-learn's ``LogisticRegression(penalty="l2", C=C_b)`` objective

    f_b(W, c) = C_b * sum_i r_ib * loss(y_ib, x_i W + c) + 0.5 * ||W||^2      (intercept c unpenalised)

with ``r_ib`` per-problem row weights (0/1 weights select a subset of rows, so inner folds, outer folds, C values
and label permutations all share one X). Two classes: one weight vector and the logistic loss (scikit-learn's
binary model, not a 2-class softmax); more: the multinomial (softmax) loss with K weight vectors.

Solver: L-BFGS per problem (own history, own step, own stopping), batched: the two-loop recursion runs on the
stacked (d + 1, B, K) parameters with per-problem dot products, the line search (Armijo backtracking with
quadratic interpolation) re-evaluates only the problems that need it, and converged problems leave the GEMMs.
Problem ``b`` stops when ``max |grad f_b| <= tol * C_b * sum_i r_ib``: scikit-learn's ``gtol = tol`` on its
objective, which is ``f_b / (C_b * sum_i r_ib)``. Features and GEMMs in float32 (``device="cuda"`` on a GPU),
objective values accumulated in float64. Agreement with scikit-learn is tested in
``tests/unit/probes/test_batched.py`` (max |difference in probability| < 1e-3 at ``tol=1e-6``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: Armijo sufficient-decrease constant and the most backtracking steps per iteration.
_C1, _MAX_LS = 1e-4, 30


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch's CPU kernels on ``n`` threads inside the block (None: leave as is)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class BatchedLogistic:
    """B fitted problems. ``coef_BKD``: (B, K', d), ``intercept_BK``: (B, K') with K' = 1 for two classes
    (scikit-learn's binary layout) else K; ``classes_``: the labels that class indices 0..K-1 stand for."""

    coef_BKD: np.ndarray
    intercept_BK: np.ndarray
    classes_: np.ndarray
    n_iter_B: np.ndarray
    #: max |gradient| / (C_b * sum of weights) at the end (scikit-learn's scale; converged: <= tol)
    grad_B: np.ndarray
    converged_B: np.ndarray

    def decision_function(self, X_ND: np.ndarray) -> np.ndarray:
        """(N, B, K') scores (one column for two classes, as scikit-learn's ``decision_function``)."""
        X = np.asarray(X_ND, dtype=self.coef_BKD.dtype)
        return np.einsum("nd,bkd->nbk", X, self.coef_BKD, optimize=True) + self.intercept_BK[None]

    def predict_proba(self, X_ND: np.ndarray) -> np.ndarray:
        """(N, B, K) probabilities."""
        z = self.decision_function(X_ND).astype(np.float64)
        if z.shape[-1] == 1:
            z = np.concatenate([np.zeros_like(z), z], axis=-1)
        z -= z.max(axis=-1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=-1, keepdims=True)

    def model(self, b: int) -> LinearModel:
        """Problem ``b`` as a model with scikit-learn's ``predict`` / ``decision_function`` / ``classes_``."""
        return LinearModel(self.coef_BKD[b], self.intercept_BK[b], self.classes_)


@dataclass(frozen=True)
class LinearModel:
    """One fitted problem, scored like a fitted ``LogisticRegression``."""

    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray

    def decision_function(self, X_ND: np.ndarray) -> np.ndarray:
        z = np.asarray(X_ND, dtype=self.coef_.dtype) @ self.coef_.T + self.intercept_
        return z[:, 0] if z.shape[1] == 1 else z

    def predict(self, X_ND: np.ndarray) -> np.ndarray:
        z = self.decision_function(X_ND)
        return self.classes_[(z > 0).astype(int) if z.ndim == 1 else z.argmax(axis=1)]


def _loss_grad(
    X: torch.Tensor, T: torch.Tensor, Y: torch.Tensor, cw: torch.Tensor, binary: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Objectives (b,) in float64 and gradients (d + 1, b, k) of the problems in ``T`` (d + 1, b, k)."""
    n, d = X.shape
    _, b, k = T.shape
    Z = (X @ T[:d].reshape(d, b * k)).view(n, b, k) + T[d]
    if binary:
        Z = torch.cat([torch.zeros_like(Z), Z], dim=-1)
    logp = torch.log_softmax(Z, dim=-1)
    loss = -(Y * logp).sum(-1)
    f = (cw * loss).sum(0, dtype=torch.float64) + 0.5 * T[:d].square().sum((0, 2), dtype=torch.float64)
    R = (logp.exp() - Y) * cw[..., None]
    if binary:
        R = R[..., 1:]
    G = torch.empty_like(T)
    G[:d] = (X.T @ R.reshape(n, b * k)).view(d, b, k) + T[:d]
    G[d] = R.sum(0)
    return f, G


def _dot(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Per-problem dot products of (p, b, k) tensors, float64."""
    return (A * B).sum((0, 2), dtype=torch.float64)


def _direction(G: torch.Tensor, S: torch.Tensor, Yh: torch.Tensor, rho: torch.Tensor, order: list[int]):
    """L-BFGS two-loop recursion per problem (history slots in ``order``, newest first; rho 0 = empty slot)."""
    q = G.clone()
    alphas = []
    for j in order:
        a = rho[j] * _dot(S[j], q)
        alphas.append(a)
        q -= S[j] * a.to(q.dtype)[None, :, None]
    gamma = torch.ones_like(rho[0])
    for j in order:  # the newest filled slot scales the initial Hessian approximation
        yy = _dot(Yh[j], Yh[j])
        fill = (rho[j] > 0) & (gamma == 1)
        gamma = torch.where(fill, 1.0 / (rho[j] * yy).clamp_min(1e-300), gamma)
    r = q * gamma.to(q.dtype)[None, :, None]
    for j, a in zip(reversed(order), reversed(alphas), strict=True):
        beta = rho[j] * _dot(Yh[j], r)
        r += S[j] * (a - beta).to(r.dtype)[None, :, None]
    return -r


def _labels(y: np.ndarray, B: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    if y.ndim == 1:
        y = np.broadcast_to(y[:, None], (n, B))
    if y.shape != (n, B):
        raise ValueError(f"y must have shape ({n},) or ({n}, {B}) (rows, problems), got {y.shape}")
    classes, index = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise ValueError(f"y has a single class ({classes[0]!r}); nothing to fit")
    return classes, index.reshape(n, B)


def _inputs(X_ND, y, C, weights, device, dtype):
    X = torch.as_tensor(np.ascontiguousarray(X_ND, dtype=np.float32), device=device).to(dtype)
    n = X.shape[0]
    C_B = np.atleast_1d(np.asarray(C, dtype=np.float64))
    B = max(C_B.size, 1 if np.ndim(y) == 1 else np.shape(y)[1])
    if weights is not None and np.ndim(weights) == 2:
        B = max(B, np.shape(weights)[1])
    C_B = np.broadcast_to(C_B, (B,))
    if not (C_B > 0).all():
        raise ValueError(f"C must be positive, got {C_B.min()}")
    classes, idx = _labels(y, B, n)
    w = np.ones((n, B)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = np.broadcast_to(w[:, None] if w.ndim == 1 else w, (n, B))
    S_B = w.sum(0)
    if (S_B <= 0).any():
        raise ValueError("every problem needs rows of positive weight")
    K = classes.size
    Y = torch.zeros((n, B, K), dtype=dtype, device=device)
    Y.scatter_(2, torch.as_tensor(idx, device=device)[..., None], 1.0)
    cw = torch.as_tensor(w * C_B[None], dtype=dtype, device=device)
    return X, Y, cw, C_B * S_B, classes


def fit_logistic_batched(
    X_ND: Any,
    y: Any,
    C: Any,
    *,
    weights: Any = None,
    tol: float = 1e-4,
    max_iter: int = 1000,
    memory: int = 10,
    device: str | torch.device | None = None,
    threads: int | None = None,
    reduce: bool | None = None,
) -> BatchedLogistic:
    """Fit B L2 logistic regressions on the rows of ``X_ND`` (n, d) at once.

    ``y``: labels (n,) shared by all problems or (n, B), one column per problem (e.g. permutations); ``C``: a
    number or (B,); ``weights``: None, (n,) or (n, B) non-negative row weights (0/1 selects rows). B is the
    largest of these. Every problem uses the classes found anywhere in ``y`` (two: binary model). ``device``:
    a torch device (default CPU); ``threads``: torch CPU threads inside the call (None: unchanged); ``reduce``:
    solve in the row space of X (n x n instead of n x d per GEMM; default: when n < 0.75 d). Problems
    that stop without meeting ``tol`` (``max_iter`` reached, or a line search that cannot decrease the objective
    in float32) are logged as a warning and marked in ``converged_B``.
    """
    dtype = torch.float32
    with torch_threads(threads), torch.no_grad():
        X, Y, cw, scale_B, classes = _inputs(X_ND, y, C, weights, device, dtype)
        binary = classes.size == 2
        n, d = X.shape
        if reduce if reduce is not None else n < 0.75 * d:
            # The L2 optimum lies in the row space of X: with X^T = Q R (Q: d x min(n, d), orthonormal) and W = Q V,
            # X W = R^T V and ||W|| = ||V||, so the same problems are solved on R^T (n x n) and mapped back.
            Q, Rm = torch.linalg.qr(X.double().T)
            T_r, n_iter = _lbfgs(Rm.T.to(dtype).contiguous(), Y, cw, scale_B, binary, tol, max_iter, memory)
            r, b, k = Q.shape[1], *T_r.shape[1:]
            T = torch.cat([(Q @ T_r[:r].double().reshape(r, b * k)).to(dtype).view(d, b, k), T_r[r:]])
        else:
            T, n_iter = _lbfgs(X, Y, cw, scale_B, binary, tol, max_iter, memory)
        f, G = _loss_grad(X, T, Y, cw, binary)
        grad_B = (G.abs().amax((0, 2)).double().cpu().numpy()) / scale_B
    coef = T[:d].permute(1, 2, 0).cpu().numpy()
    converged = grad_B <= tol
    if not converged.all():
        logger.warning(
            "batched logistic regression: %d of %d problems stopped above tol=%g (worst scaled gradient %.2e)",
            int((~converged).sum()),
            converged.size,
            tol,
            grad_B.max(),
        )
    return BatchedLogistic(coef, T[d].cpu().numpy(), classes, n_iter, grad_B, converged)


def _lbfgs(X, Y, cw, scale_B, binary, tol, max_iter, m):
    n, d = X.shape
    B, K = Y.shape[1], 1 if binary else Y.shape[2]
    dev, dt = X.device, X.dtype
    T = torch.zeros((d + 1, B, K), dtype=dt, device=dev)
    S = torch.zeros((m, d + 1, B, K), dtype=dt, device=dev)
    Yh = torch.zeros_like(S)
    rho = torch.zeros((m, B), dtype=torch.float64, device=dev)
    scale = torch.as_tensor(scale_B, device=dev)
    f, G = _loss_grad(X, T, Y, cw, binary)
    n_iter = np.zeros(B, dtype=np.int64)
    active = G.abs().amax((0, 2)).double() > tol * scale
    for it in range(max_iter):
        if not active.any():
            break
        order = [(it - 1 - j) % m for j in range(min(it, m))]
        P = _direction(G, S, Yh, rho, order)
        gd = _dot(G, P)
        bad = gd >= 0  # not a descent direction (float32 noise): restart from steepest descent
        if bad.any():
            P[:, bad] = -G[:, bad]
            rho[:, bad] = 0
            gd = torch.where(bad, -_dot(G, G), gd)
        t = torch.ones(B, dtype=torch.float64, device=dev)
        if it == 0:
            t = 1.0 / _dot(G, G).sqrt().clamp_min(1e-30)
        slot = it % m
        rho[slot] = 0
        pending = active.clone()
        for _ in range(_MAX_LS):
            idx = pending.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            step = t[idx].to(dt)[None, :, None] * P[:, idx]
            T_try = T[:, idx] + step
            f_try, G_try = _loss_grad(X, T_try, Y[:, idx], cw[:, idx], binary)
            slack = 1e-6 * f[idx].abs()  # objective values carry float32 rounding
            ok = f_try <= f[idx] + _C1 * t[idx] * gd[idx] + slack
            acc = idx[ok]
            if acc.numel():
                s, yv = step[:, ok], G_try[:, ok] - G[:, acc]
                sy = _dot(s, yv)
                S[slot][:, acc], Yh[slot][:, acc] = s, yv
                rho[slot, acc] = torch.where(sy > 0, 1.0 / sy.clamp_min(1e-300), torch.zeros_like(sy))
                T[:, acc], G[:, acc], f[acc] = T_try[:, ok], G_try[:, ok], f_try[ok]
                pending[acc] = False
            rej = idx[~ok]
            if rej.numel():  # quadratic interpolation of the step, kept within [0.1, 0.5] of the last one
                tr, fd = t[rej], f_try[~ok] - f[rej] - t[rej] * gd[rej]
                t_q = -gd[rej] * tr * tr / (2 * fd.clamp_min(1e-300))
                t[rej] = torch.minimum(torch.maximum(t_q, 0.1 * tr), 0.5 * tr)
        n_iter[active.cpu().numpy()] += 1
        active &= ~pending  # a failed line search ends that problem (reported by the final gradient check)
        active &= G.abs().amax((0, 2)).double() > tol * scale
    return T, n_iter
