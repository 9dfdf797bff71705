"""Batched L2 logistic regression: many problems that share one feature matrix, fit at once.

Hand-written because no library fits many logistic regressions over one X in one pass (scikit-learn fits one
problem per call, each a memory-bound pass over X per iteration); here every iteration of all B problems is two
compute-bound GEMMs.

Problem ``b`` minimises exactly scikit-learn's ``LogisticRegression(penalty="l2", C=C_b)`` objective

    f_b(W, c) = C_b * sum_i r_ib * loss(y_ib, x_i W + c) + 0.5 * ||W||^2      (intercept c unpenalised)

with ``r_ib`` per-problem row weights (0/1 weights select a subset of rows, so inner folds, outer folds, C values
and label permutations all share one X). Two classes: one weight vector and the logistic loss (scikit-learn's
binary model, not a 2-class softmax); more: the multinomial (softmax) loss with K weight vectors.

How (each step exact; none changes the optimum):

* **Basis.** The L2 optimum lies in the span of the centred rows, so every problem is solved on
  ``Z = (X - 1 m^T) V`` (n, r), V the eigenvectors of the smaller centred Gram matrix (:class:`Basis`, one
  eigendecomposition per X, shared by all problems on it; the intercept absorbs ``m^T W``). Z's columns are
  orthogonal, so the loss Hessian at uniform probabilities (``C/4 Z^T Z``) is diagonal there. The solver is
  preconditioned by the Hessian's diagonal (plus the penalty's identity): a scaled uniform-probability bound at
  the start, recomputed from the fitted probabilities after a few iterations (one more product). This cuts the
  iterations of ill-conditioned and large-C problems severalfold.
* **Classes.** The softmax ignores a vector added to every class's weights, so the optimum's class weights sum
  to zero and K classes are solved on K - 1 orthonormal sum-zero columns (binary: one column, scikit-learn's
  model).
* **L-BFGS per problem** (own history, step and stopping), batched: two GEMMs per iteration over all live
  problems, the direction's scores ``Z P`` and the gradient ``Z^T R``; the Armijo backtracking line search
  (quadratic interpolation) moves the scores ``L + t Z P`` elementwise, without another product. Problems
  that stop leave the working set.
* Parameters are laid out (coordinate, class, problem), so softmax reductions run over contiguous problems.

Problem ``b`` stops when ``max |grad f_b| <= tol * C_b * sum_i r_ib``: scikit-learn's ``gtol = tol`` on its
objective, which is ``f_b / (C_b * sum_i r_ib)``. The solver checks it on its own coordinates, then again in the
original ones; a problem still above ``tol`` there continues until it is below.
Features and GEMMs in float32 (``device="cuda"`` on a GPU), objective values accumulated in float64. Agreement
with scikit-learn is tested in ``tests/unit/probes/test_batched.py`` (max |difference in probability| < 1e-3 at
``tol=1e-6``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import sparse
from threadpoolctl import threadpool_limits

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

    def decision_function(self, X_ND: np.ndarray, problems: slice = slice(None)) -> np.ndarray:
        """(N, B, K') scores of ``problems`` (one column for two classes, as scikit-learn's
        ``decision_function``)."""
        X = np.asarray(X_ND, dtype=self.coef_BKD.dtype)
        coef, intercept = self.coef_BKD[problems], self.intercept_BK[problems]
        return np.einsum("nd,bkd->nbk", X, coef, optimize=True) + intercept[None]

    def predict_proba(self, X_ND: np.ndarray, problems: slice = slice(None)) -> np.ndarray:
        """(N, B, K) probabilities of ``problems``."""
        z = self.decision_function(X_ND, problems).astype(np.float64)
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


def _class_basis(K: int, dtype, device) -> torch.Tensor | None:
    """(K, K - 1) orthonormal basis of the vectors whose entries sum to zero (None for two classes): with
    ``W = W' Q^T`` the K-class problem is solved exactly on K - 1 columns (``||W|| = ||W'||``)."""
    if K == 2:
        return None
    A = torch.eye(K, dtype=torch.float64) - 1.0 / K
    Q, _ = torch.linalg.qr(A[:, : K - 1])
    return Q.to(dtype=dtype, device=device)


def _classes(L: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """``L`` (n, k, b) mapped along its class axis by ``M`` (j, k): (n, j, b)."""
    if M.shape[1] <= 4:  # a few classes: broadcast sums beat a batched product of tiny matrices
        out = L[:, :1] * M[None, :, 0, None]
        for i in range(1, M.shape[1]):
            out = out + L[:, i : i + 1] * M[None, :, i, None]
        return out
    return torch.einsum("jk,nkb->njb", M, L)


def _mm(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``A @ B``; on the CPU through numpy's BLAS (OpenBLAS), which ran 1.1x torch's MKL GEMMs at 200 result
    columns and 2-4x at under 20 (the solver's tail of a few live problems), on one AMD EPYC core."""
    if A.device.type != "cpu":
        return A @ B
    return torch.from_numpy(np.matmul(A.numpy(), B.numpy()))


def _logits(Z: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """(n, k', b) scores of the problems in ``T`` (r + 1, k', b): rows 0..r-1 weights on the columns of ``Z``
    (n, r), row r the intercept; k' = 1 (binary), K, or K - 1 (class coordinates in a sum-zero basis ``Q``)."""
    n, r = Z.shape
    _, k, b = T.shape
    return _mm(Z, T[:r].reshape(r, k * b)).view(n, k, b) + T[r]


def _data_loss(
    L: torch.Tensor, Y: torch.Tensor, cw: torch.Tensor, binary: bool, Q: torch.Tensor | None, residuals=True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weighted log-loss (b,) in float64 of scores ``L`` (n, k', b), and (with ``residuals``) the residuals
    ``R`` (n, k', b) whose product with the features is its gradient. ``Y``: (n, K, b) one-hot labels; ``cw``:
    (n, b) C x row weight."""
    if binary:
        L = torch.cat([torch.zeros_like(L), L], dim=1)
    elif Q is not None:
        L = _classes(L, Q)
    logp = torch.log_softmax(L, dim=1)
    loss = (cw * (Y * logp).sum(1)).sum(0).double().neg()
    if not residuals:  # the line search needs the objective only
        return loss, None
    R = (logp.exp() - Y) * cw[:, None]
    if binary:
        R = R[:, 1:]
    elif Q is not None:
        R = _classes(R, Q.T)
    return loss, R


def _gradient(Z: torch.Tensor, T: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """(r + 1, k', b) gradient of the objective at ``T`` from the residuals ``R``: ``Z^T R + T`` (penalised
    weights), ``sum R`` (intercept)."""
    n, r = Z.shape
    _, k, b = T.shape
    G = torch.empty_like(T)
    G[:r] = _mm(Z.T, R.reshape(n, k * b)).view(r, k, b) + T[:r]
    G[r] = R.sum(0)
    return G


def _loss_grad(
    Z: torch.Tensor, T: torch.Tensor, Y: torch.Tensor, cw: torch.Tensor, binary: bool, Q: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Objectives (b,) in float64 and gradients (r + 1, k', b) of the problems in ``T`` (see :func:`_logits`)."""
    r = Z.shape[1]
    loss, R = _data_loss(_logits(Z, T), Y, cw, binary, Q)
    return loss + 0.5 * _dot(T[:r], T[:r]), _gradient(Z, T, R)


def _dot(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Per-problem dot products (b,) of (p, k, b) tensors (float32 sums along the leading axes, as float64)."""
    return (A * B).sum(0).sum(0).double()


def _direction(G: torch.Tensor, S: torch.Tensor, Yh: torch.Tensor, rho: torch.Tensor, order: list[int]):
    """L-BFGS two-loop recursion per problem (history slots in ``order``, newest first; rho 0 = empty slot)."""
    q = G.clone()
    alphas = []
    for j in order:
        a = rho[j] * _dot(S[j], q)
        alphas.append(a)
        q -= S[j] * a.to(q.dtype)
    gamma = torch.ones_like(rho[0])
    for j in order:  # the newest filled slot scales the initial Hessian approximation
        yy = _dot(Yh[j], Yh[j])
        fill = (rho[j] > 0) & (gamma == 1)
        gamma = torch.where(fill, 1.0 / (rho[j] * yy).clamp_min(1e-300), gamma)
    r = q * gamma.to(q.dtype)
    for j, a in zip(reversed(order), reversed(alphas), strict=True):
        beta = rho[j] * _dot(Yh[j], r)
        r += S[j] * (a - beta).to(r.dtype)
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
    Y = torch.zeros((n, K, B), dtype=dtype, device=device)
    Y.scatter_(1, torch.as_tensor(idx, device=device)[:, None, :], 1.0)
    cw = torch.as_tensor(w * C_B[None], dtype=dtype, device=device)
    return X, Y, cw, C_B * S_B, classes


@dataclass(frozen=True)
class Basis:
    """Orthogonal coordinates for the rows of a feature matrix X (n, d), centred: ``Z = (X - 1 m^T) V`` (n, r)
    with ``m`` the column means, ``Z^T Z = diag(lam)``, ``V`` (d, r) orthonormal (directions of eigenvalue below
    ``_RANK_RTOL`` of the largest are the numerical null space, dropped). For an L2-penalised linear model with
    an unpenalised intercept, ``X W + c = Z beta + c'`` with ``W = V beta`` and ``c = c' - m^T W``, and
    ``||W|| = ||beta||``; its optimum ``W = -X^T R`` has ``sum R = 0`` (the intercept's condition), so it lies in
    the centred rows' span: every problem over X is solved exactly on Z. Centring also makes the intercept
    orthogonal to Z's columns. Computed once per X (:func:`basis`) and shared by every problem on it (inner
    folds, C values, permutations)."""

    Z_NR: torch.Tensor
    lam_R: torch.Tensor
    #: n <= d: ``U diag(lam^-1/2)`` (n, r), so that ``V = (X - 1 m^T)^T back``; else ``V`` itself (d, r)
    back: torch.Tensor
    row_space: bool
    X_ND: torch.Tensor
    mean_D: torch.Tensor

    @functools.cached_property
    def Z2_NR(self) -> torch.Tensor:
        """``Z_NR`` squared elementwise (the preconditioner's products), computed once per basis."""
        return self.Z_NR.square()

    @property
    def rank(self) -> int:
        return int(self.lam_R.numel())

    def coef(self, beta_RM: torch.Tensor) -> torch.Tensor:
        """(d, m) coefficients ``V beta`` of (r, m) basis coordinates."""
        beta = beta_RM.to(self.back.dtype)
        if self.row_space:  # the product with X in float32 (X's own precision), the rest in float64
            a = _mm(self.back, beta)
            W = _mm(self.X_ND.T, a.to(self.X_ND.dtype)).to(a.dtype) - self.mean_D[:, None] * a.sum(0)
        else:
            W = _mm(self.back, beta)
        return W.to(beta_RM.dtype)


#: Directions whose eigenvalue is below this fraction of the largest are X's numerical null space (dropped).
_RANK_RTOL = 1e-10


def basis(X_ND: Any, *, device: str | torch.device | None = None, threads: int | None = None) -> Basis:
    """The :class:`Basis` of ``X_ND`` (n, d; dense, or scipy sparse with n <= d): eigenvectors of the smaller
    Gram matrix of the centred rows (``Xc Xc^T`` when n <= d, else ``Xc^T Xc``), in float64. A sparse X's Gram
    matrix is its sparse product, centred afterwards (``X X^T - v 1^T - 1 v^T + |m|^2``, ``v = X m``)."""
    with torch_threads(threads), torch.no_grad(), threadpool_limits(limits=threads, user_api="blas"):
        n, d = X_ND.shape
        row_space = n <= d
        if sparse.issparse(X_ND):
            if not row_space:
                raise ValueError(f"a sparse basis needs rows <= columns, got {n} x {d}")
            Xs = sparse.csr_matrix(X_ND, dtype=np.float64)
            m = np.asarray(Xs.mean(axis=0)).ravel()
            v = Xs @ m
            gram = torch.from_numpy((Xs @ Xs.T).toarray() - v[:, None] - v[None, :] + m @ m)
            X = torch.as_tensor(Xs.astype(np.float32).toarray(), device=device)
            mean = torch.from_numpy(m)
        else:
            X = torch.as_tensor(np.ascontiguousarray(X_ND, dtype=np.float32), device=device)
            mean = X.double().mean(0)
            Xc = X.double() - mean
            gram = _mm(Xc, Xc.T) if row_space else _mm(Xc.T, Xc)
        if gram.device.type == "cpu":  # LAPACK's dsyevd through numpy: ~1.2x torch's eigh on one CPU thread
            lam_np, E_np = np.linalg.eigh(gram.numpy())
            lam, E = torch.from_numpy(lam_np), torch.from_numpy(E_np)
        else:
            lam, E = torch.linalg.eigh(gram)
        keep = lam > _RANK_RTOL * lam.max().clamp_min(1e-300)
        lam, E = lam[keep], E[:, keep]
        if row_space:
            Z, back = E * lam.sqrt(), E / lam.sqrt()
        else:
            Z, back = _mm(Xc, E), E
        return Basis(
            Z.float().contiguous(), lam.to(X.device), back.to(X.device), row_space, X, mean.to(X.device)
        )


def _original(T_r, rows: Basis, X, Y, cw, binary, Q, scale_B) -> tuple[torch.Tensor, np.ndarray]:
    """Basis-coordinate solutions (r + 1, k', B) as (d + 1, K', B) coefficients and intercepts of X, and each
    problem's max |gradient| there on scikit-learn's scale."""
    r, d = rows.rank, X.shape[1]
    if Q is not None:  # back from sum-zero class coordinates to K columns
        T_r = _classes(T_r, Q)
    k, b = T_r.shape[1:]
    W = rows.coef(T_r[:r].reshape(r, k * b)).view(d, k, b)
    c0 = T_r[r] - torch.einsum("d,dkb->kb", rows.mean_D.to(W.dtype), W)  # c = c' - m^T W
    T = torch.cat([W, c0[None]])
    _, G = _loss_grad(X, T, Y, cw, binary, None)
    return T, G.abs().amax((0, 1)).double().cpu().numpy() / scale_B


def fit_logistic_batched(
    X_ND: Any,
    y: Any,
    C: Any,
    *,
    weights: Any = None,
    tol: float = 1e-4,
    max_iter: int = 1000,
    memory: int = 2,
    device: str | torch.device | None = None,
    threads: int | None = None,
    rows: Basis | None = None,
) -> BatchedLogistic:
    """Fit B L2 logistic regressions on the rows of ``X_ND`` (n, d) at once.

    ``y``: labels (n,) shared by all problems or (n, B), one column per problem (e.g. permutations); ``C``: a
    number or (B,); ``weights``: None, (n,) or (n, B) non-negative row weights (0/1 selects rows). B is the
    largest of these. Every problem uses the classes found anywhere in ``y`` (two: binary model). ``device``:
    a torch device (default CPU); ``threads``: torch CPU threads inside the call (None: unchanged); ``rows``:
    the :class:`Basis` of ``X_ND`` when it was computed before (shared by several calls on the same X).
    Problems that stop without meeting ``tol`` (``max_iter`` reached, or a line search that cannot decrease the
    objective in float32) are logged as a warning and marked in ``converged_B``.
    """
    dtype = torch.float32
    with torch_threads(threads), torch.no_grad(), threadpool_limits(limits=threads, user_api="blas"):
        X, Y, cw, scale_B, classes = _inputs(X_ND, y, C, weights, device, dtype)
        binary = classes.size == 2
        n, d = X.shape
        rows = rows if rows is not None else basis(X, device=device)
        if rows.Z_NR.shape[0] != n:
            raise ValueError(f"rows: a basis of {rows.Z_NR.shape[0]} rows for X with {n}")
        K = classes.size
        Q = _class_basis(K, dtype, X.device)
        T_r, n_iter = _lbfgs(rows.Z_NR, rows.Z2_NR, Y, cw, scale_B, binary, Q, tol, max_iter, memory)
        T, grad_B = _original(T_r, rows, X, Y, cw, binary, Q, scale_B)
        # The solver stopped on its own coordinates' gradient (a rotation of scikit-learn's, whose max can be
        # smaller): problems above tol in the original coordinates continue from where they are, until their own
        # gradient has shrunk by the factor that brings the original one to half the tolerance.
        again = np.flatnonzero((grad_B > tol) & (n_iter < max_iter))
        if again.size:
            i = torch.as_tensor(again, device=X.device)
            _, G_own = _loss_grad(rows.Z_NR, T_r[..., i], Y[..., i], cw[:, i], binary, Q)
            own = G_own.abs().amax((0, 1)).double().cpu().numpy() / scale_B[again]
            shrink = np.clip(own / grad_B[again], 1e-4, 1.0) * 0.5
            T_more, n_more = _lbfgs(
                rows.Z_NR,
                rows.Z2_NR,
                Y[..., i],
                cw[:, i],
                scale_B[again] * shrink,
                binary,
                Q,
                tol,
                max_iter - int(n_iter[again].min()),
                memory,
                T0=T_r[..., i],
            )
            T_r[..., i] = T_more
            n_iter[again] += n_more
            T, grad_B = _original(T_r, rows, X, Y, cw, binary, Q, scale_B)
    coef = T[:d].permute(2, 1, 0).cpu().numpy()
    converged = grad_B <= tol
    if not converged.all():
        logger.warning(
            "batched logistic regression: %d of %d problems stopped above tol=%g (worst scaled gradient %.2e)",
            int((~converged).sum()),
            converged.size,
            tol,
            grad_B.max(),
        )
    return BatchedLogistic(coef, T[d].T.cpu().numpy(), classes, n_iter, grad_B, converged)


#: The diagonal preconditioner's scales (:func:`_precondition`): at the start (uniform probabilities, which the fit
#: leaves, so the curvature computed there is too large) and from iteration ``_REFRESH_AT`` on (the fitted
#: probabilities); the intercept's floor. With the L-BFGS memory (``fit_logistic_batched(memory=)``) 2, these took
#: the fewest iterations on the probe benchmark's fold-runs, its binary, strong-signal and d < n variants, and an
#: anisotropic stand-in (power-law spectrum, outlier dimensions): 1.3-8.7x fewer than one fixed bound (scale 0.2),
#: whose iterations at large C grow with the anisotropy (``benchmarks/probes_preconditioner.py``). Without the
#: floor, 100-class fits on sparse codes stalled; a floor of 0.05 or more slowed the dense fits again.
_CURVATURE, _REFRESH_AT, _REFRESH_SCALE, _INTERCEPT_FLOOR = 0.5, 4, 0.3, 0.01


def _line_search(L, ZD, Y, cw, binary, Q, f, gd, sq):
    """Armijo backtracking per problem along scores ``L + t ZD`` (elementwise: no product with the features),
    from t = 1, quadratic interpolation of a rejected step kept within [0.1, 0.5] of it. ``sq``: the penalty's
    ``||T||^2, 2 <T, D>, ||D||^2``. Returns the steps (float64), the new objectives and the problems whose search
    failed."""
    b, dev, dt = f.numel(), f.device, L.dtype
    sq0, sq1, sq2 = sq
    t = torch.ones(b, dtype=torch.float64, device=dev)
    pending = torch.ones(b, dtype=torch.bool, device=dev)
    f_new = f.clone()
    for _ in range(_MAX_LS):
        idx = None if bool(pending.all()) else pending.nonzero().squeeze(1)
        if idx is not None and idx.numel() == 0:
            break
        sel = (lambda A: A) if idx is None else (lambda A, i=idx: A[..., i])  # noqa: E731
        ti = sel(t)
        loss, _ = _data_loss(sel(L) + ti.to(dt) * sel(ZD), sel(Y), sel(cw), binary, Q, residuals=False)
        f_try = loss + 0.5 * (sel(sq0) + ti * sel(sq1) + ti * ti * sel(sq2))
        fi = sel(f)
        ok = f_try <= fi + _C1 * ti * sel(gd) + 1e-6 * fi.abs()  # slack: objectives carry float32 rounding
        at = torch.arange(b, device=dev) if idx is None else idx
        f_new[at[ok]] = f_try[ok]
        pending[at[ok]] = False
        rej = at[~ok]
        if rej.numel():
            tr, fd = t[rej], f_try[~ok] - f[rej] - t[rej] * gd[rej]
            t_q = -gd[rej] * tr * tr / (2 * fd.clamp_min(1e-300))
            t[rej] = torch.minimum(torch.maximum(t_q, 0.1 * tr), 0.5 * tr)
    return t, f_new, pending


def _precondition(Z2, L, cw, binary, Q, scale) -> torch.Tensor:
    """(r + 1, k', b) inverse square roots of a diagonal preconditioner at scores ``L``: ``1 + scale * diag(H)``,
    H the data loss's Hessian in the basis (``Z2``: the basis columns squared, (n, r)), 1 the penalty's. Per row
    and class coordinate H's diagonal weight is ``p (1 - p)`` (binary) or ``diag(Q^T (diag(p) - p p^T) Q)``
    (softmax on sum-zero coordinates). The unpenalised intercept's entry is ``scale * diag(H)`` but at least
    ``_INTERCEPT_FLOOR`` times its value at the start: when every row is fitted confidently (100 classes on
    sparse codes) its curvature tends to 0, and the intercept's step would swamp the rest."""
    n, r = Z2.shape
    if binary:
        p = torch.sigmoid(L)
        w = p * (1 - p)
    else:
        p = torch.softmax(_classes(L, Q), dim=1)  # more than two classes always have the sum-zero basis Q
        w = _classes(p, (Q * Q).T) - _classes(p, Q.T).square()
    w_uniform = 0.25 if binary else 1.0 / p.shape[1]
    k, b = w.shape[1:]
    cwW = cw[:, None, :] * w
    h = torch.empty((r + 1, k, b), dtype=torch.float64, device=L.device)
    h[:r] = 1.0 + scale * _mm(Z2.T, cwW.reshape(n, k * b)).view(r, k, b).double()
    floor = _INTERCEPT_FLOOR * _CURVATURE * w_uniform * cw.sum(0).double()
    h[r] = torch.maximum(scale * cwW.sum(0).double(), floor[None])
    return h.rsqrt().to(L.dtype)


def _lbfgs(Z, Z2, Y, cw, scale_B, binary, Q, tol, max_iter, m, T0=None):
    """L-BFGS over ``u`` with parameters ``T = s * u``, ``s`` (r + 1, k', B) the diagonal preconditioner
    (:func:`_precondition`: at the start, and again from the fitted probabilities at iteration ``_REFRESH_AT``,
    where the history restarts), from ``T0`` (default 0). Returns ``T`` (r + 1, k', B) and iterations per
    problem."""
    n, r = Z.shape
    B = Y.shape[2]
    k = 1 if binary else Y.shape[1] - (Q is not None)
    dev, dt = Z.device, Z.dtype
    T_out = torch.zeros((r + 1, k, B), dtype=dt, device=dev)
    n_iter = np.zeros(B, dtype=np.int64)
    live = torch.arange(B, device=dev)
    T = torch.zeros((r + 1, k, B), dtype=dt, device=dev) if T0 is None else T0.clone()
    S = torch.zeros((m, r + 1, k, B), dtype=dt, device=dev)
    Yh = torch.zeros_like(S)
    rho = torch.zeros((m, B), dtype=torch.float64, device=dev)
    thresh = torch.as_tensor(np.asarray(scale_B) * tol, device=dev)
    L = _logits(Z, T)
    f, R = _data_loss(L, Y, cw, binary, Q)
    f = f + 0.5 * _dot(T[:r], T[:r])
    G = _gradient(Z, T, R)
    s = _precondition(Z2, L, cw, binary, Q, _CURVATURE if T0 is None else _REFRESH_SCALE)
    Gu = G * s
    failed = torch.zeros(B, dtype=torch.bool, device=dev)
    for it in range(max_iter):
        active = (G.abs().amax((0, 1)).double() > thresh) & ~failed
        if not active.all():  # write back the stopped problems and shrink the working set
            T_out[..., live[~active]] = T[..., ~active]
            keep = active.nonzero().squeeze(1)
            live, f, thresh, failed = live[keep], f[keep], thresh[keep], failed[keep]
            T, L, G, Gu, s, Y, cw = (x[..., keep] for x in (T, L, G, Gu, s, Y, cw))
            S, Yh, rho = S[..., keep], Yh[..., keep], rho[:, keep]
        if live.numel() == 0:
            break
        if it == _REFRESH_AT:  # the preconditioner from the fitted probabilities; the history restarts
            s = _precondition(Z2, L, cw, binary, Q, _REFRESH_SCALE)
            Gu = G * s
            rho.zero_()
        order = [(it - 1 - j) % m for j in range(min(it, m))]
        P = _direction(Gu, S, Yh, rho, order)
        gd = _dot(Gu, P)
        bad = gd >= 0  # not a descent direction (float32 noise): restart from steepest descent
        if bad.any():
            P[..., bad] = -Gu[..., bad]
            rho[:, bad] = 0
            gd = torch.where(bad, -_dot(Gu, Gu), gd)
        D = P * s  # the step in parameter space
        ZD = _logits(Z, D)  # its scores: the line search needs no further product
        # ||T + t D||^2 = ||T||^2 + 2 t <T, D> + t^2 ||D||^2 over the penalised rows
        sq0, sq1, sq2 = _dot(T[:r], T[:r]), 2 * _dot(T[:r], D[:r]), _dot(D[:r], D[:r])
        t, f_new, pending = _line_search(L, ZD, Y, cw, binary, Q, f, gd, (sq0, sq1, sq2))
        # a failed line search ends that problem (no move; reported by the final gradient check)
        t = torch.where(pending, torch.zeros_like(t), t).to(dt)
        T, L, f = T + t * D, L + t * ZD, f_new
        _, R = _data_loss(L, Y, cw, binary, Q)
        G = _gradient(Z, T, R)
        Gu_new = G * s
        slot = it % m
        S[slot], Yh[slot] = t * P, Gu_new - Gu
        sy = _dot(S[slot], Yh[slot])
        rho[slot] = torch.where(sy > 0, 1.0 / sy.clamp_min(1e-300), torch.zeros_like(sy))
        Gu = Gu_new
        n_iter[live.cpu().numpy()] += 1
        failed = pending
    T_out[..., live] = T
    return T_out, n_iter
