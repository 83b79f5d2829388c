"""Many small bounded least-squares fits at once (the bootstrap's refits).

A vectorised Levenberg-Marquardt: every problem b minimises sum_m w[b, m] rho(r[b, m](theta_b)),
with rho the square (r^2 / 2) or the Huber function of threshold 1 (residuals are pre-scaled).
Huber is handled by iteratively reweighted least squares: the weight min(1, 1/|r|) turns the
Huber gradient J^T psi(r) into J^T W r, and each accepted step decreases the true objective.
Bounds are kept by projecting each step onto the box. All problems share the residual function
and iterate together until each has stopped improving.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

ResidualFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""theta [B, P] -> (residuals [B, M], Jacobian [B, M, P])"""


def objective(residuals: np.ndarray, weights: np.ndarray, huber: bool) -> np.ndarray:
    """Per-problem weighted sum of rho(r)."""
    size = np.abs(residuals)
    rho = np.where(size <= 1.0, 0.5 * residuals**2, size - 0.5) if huber else 0.5 * residuals**2
    return np.sum(weights * rho, axis=1)


def solve(residual_fn: ResidualFn, theta0: np.ndarray, weights: np.ndarray, lower: np.ndarray,
          upper: np.ndarray, *, huber: bool, max_iter: int = 200, rtol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Minimise every problem from its start; returns (theta [B, P], objective [B])."""
    theta = np.clip(theta0.astype(float), lower, upper)
    residuals, jacobian = residual_fn(theta)
    value = objective(residuals, weights, huber)
    damping = np.full(len(theta), 1e-3)
    active = np.ones(len(theta), dtype=bool)
    identity = np.eye(theta.shape[1])
    for _ in range(max_iter):
        if not active.any():
            break
        irls = weights * (np.minimum(1.0, 1.0 / np.maximum(np.abs(residuals), 1e-300)) if huber else 1.0)
        weighted = jacobian.transpose(0, 2, 1) * irls[:, None, :]
        gradient = np.matmul(weighted, residuals[:, :, None])[:, :, 0]
        normal = np.matmul(weighted, jacobian)
        diagonal = np.diagonal(normal, axis1=1, axis2=2)
        system = normal + damping[:, None, None] * (diagonal[:, :, None] * identity + 1e-12 * identity)
        try:
            step = np.linalg.solve(system, -gradient[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = -gradient / np.maximum(np.abs(diagonal), 1e-12)
        step = np.where(np.isfinite(step), step, 0.0)
        candidate = np.where(active[:, None], np.clip(theta + step, lower, upper), theta)
        new_residuals, new_jacobian = residual_fn(candidate)
        new_value = objective(new_residuals, weights, huber)
        new_value = np.where(np.isfinite(new_value), new_value, np.inf)
        better = active & (new_value < value)
        improvement = np.where(better, value - new_value, 0.0)
        theta = np.where(better[:, None], candidate, theta)
        residuals = np.where(better[:, None], new_residuals, residuals)
        jacobian = np.where(better[:, None, None], new_jacobian, jacobian)
        damping = np.where(better, damping / 3.0, damping * 4.0)
        settled = better & (improvement <= rtol * np.maximum(value, 1e-300))
        value = np.where(better, new_value, value)
        active &= ~settled & (damping < 1e12)
    return theta, value
