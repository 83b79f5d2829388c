"""The step-1 laws besides the paper's, as problems that `step1.fit_problem` and `step1.refit_step1` solve.

Every law is fitted as step 1 is: the sum of Huber(delta) of the log residuals log L_pred - log L,
from a grid of starts run at once by the vectorised solver, polished by L-BFGS-B, in a conditioned
parametrisation (N_ref, D_ref, C_ref are the geometric means of the points' N, D and C):

- tied exponents: L(N, D) = A / N^alpha + B / D^alpha + E, with theta = (a, alpha, b, e),
  A / N^alpha = exp(a - alpha (log N - log N_ref)), B / D^alpha = exp(b - alpha (log D - log D_ref)),
  E = exp(e);
- compute only: L(N, D) = A / C^gamma + E with C = 6 N D, theta = (a, gamma, e),
  A / C^gamma = exp(a - gamma (log C - log C_ref)), E = exp(e);
- shared exponents, tasks t = 1..T fitted together: L_t(N, D) = A_t / N^alpha + B_t / D^beta + E_t
  with alpha and beta common to every task, theta = (alpha, beta, a_1, b_1, e_1, ..., a_T, b_T, e_T)
  (each task's a, b, e as in step 1), the objective summed over every task's points.

Bounds as in step 1: exponents in [0, 4]; each term between 1e-6 and 100 times the (task's) mean
loss; E between 1e-6 times the (task's) least loss and its largest. Starts: for each exponent of a
grid (each pair, for the shared law), the law is linear in its coefficients (A, B, E), which
non-negative least squares on the loss gives (variable projection): a few starts, each the best
for its exponents, where a grid over the coefficients would need hundreds (the checkpoint laws
have a thousand points or more, the shared law 3 parameters per task).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls

from ladder.fit import batched
from ladder.fit.step1 import EXPONENT_BOUNDS, at_bound

COMPUTE_PER_TOKEN = 6.0  # C = 6 N D training FLOPs
EXPONENT_GRID = (0.03, 0.06, 0.1, 0.15, 0.22, 0.3, 0.4, 0.55, 0.75, 1.0, 1.4)  # starts of each exponent


def _projected(columns: list[np.ndarray], loss: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """log of the non-negative least-squares coefficients of `columns` for `loss`, inside the bounds."""
    coefficients, _ = nnls(np.column_stack(columns), loss)
    return np.clip(np.log(np.maximum(coefficients, 1e-300)), lower, upper)


@dataclass
class LawFit:
    """A fitted step-1 law with its diagnostics (the fields of step1.Step1Fit that are not parameters)."""

    law: str
    """the law's name"""
    params: dict[str, float]
    """its parameters (A, alpha, ...) in the law's own units"""
    objective: float
    """sum of Huber(delta) of the log residuals at the optimum"""
    rmse_log: float
    """root mean square of the log residuals"""
    n_points: int
    """points fitted"""
    n_starts: int
    """initial values tried"""
    converged: bool
    """the optimiser reported convergence from the winning start"""
    at_bound: list[str]
    """parameters that ended on a bound"""
    theta: np.ndarray = field(repr=False)
    """conditioned parameters"""
    problem: Any = field(repr=False)
    """what evaluates the law: `problem.predict(theta [B, P], N, D)`"""
    alternatives: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)
    """other local optima the grid found (extra starts for the bootstrap refits)"""

    def predict(self, N, D) -> np.ndarray:
        return self.problem.predict(self.theta[None, :], N, D)[0]

    def as_dict(self) -> dict[str, float]:
        return dict(self.params)


def _flat(N, D) -> tuple[np.ndarray, np.ndarray, tuple]:
    N, D = np.broadcast_arrays(np.asarray(N, dtype=float), np.asarray(D, dtype=float))
    return N.reshape(-1), D.reshape(-1), N.shape


def _size_and_data(problem, a, alpha, b, beta, e, N, D) -> np.ndarray:
    """A / N^alpha + B / D^beta + E [B, *shape of N and D] from conditioned parameters (each [B, 1])
    about `problem`'s reference point (its log_n_ref and log_d_ref)."""
    n, d, shape = _flat(N, D)
    value = (
        np.exp(a - alpha * (np.log(n) - problem.log_n_ref))
        + np.exp(b - beta * (np.log(d) - problem.log_d_ref))
        + np.exp(e)
    )
    return value.reshape(len(a), *shape)


def _term_bounds(loss: np.ndarray) -> tuple[float, float]:
    scale = math.log(float(np.mean(loss)))
    return math.log(1e-6) + scale, math.log(100.0) + scale


def _floor_bounds(loss: np.ndarray) -> tuple[float, float]:
    return math.log(1e-6 * float(np.min(loss))), math.log(float(np.max(loss)))


def _law_fit(problem, law: str, params: dict[str, float], theta: np.ndarray, converged: bool, n_starts: int) -> LawFit:
    """The fit of `problem` at `theta` (its parameters `params` in the law's units), with its diagnostics."""
    objective, rmse, count = _summary(problem, theta)
    bounded = at_bound(theta, problem.lower, problem.upper, problem.names)
    return LawFit(law, params, objective, rmse, count, n_starts, converged, bounded, theta.copy(), problem)


def _summary(problem, theta: np.ndarray, points: np.ndarray | slice = slice(None)) -> tuple[float, float, int]:
    """Objective, RMS log residual and count over `points` (default: all) at `theta`."""
    residual, _ = problem.residuals(theta[None, :], np.log(problem.loss)[None, :])
    residual = residual[:, points]
    objective = float(batched.objective(residual, np.ones_like(residual), huber=True)[0]) * problem.delta**2
    return objective, float(np.sqrt(np.mean((residual * problem.delta) ** 2))), residual.shape[1]


@dataclass
class TiedProblem:
    """L(N, D) = A / N^alpha + B / D^alpha + E on a task's points."""

    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    delta: float = 1e-3
    names = ("A", "alpha", "B", "E")
    point_arrays = ("N", "D", "loss", "log_n", "log_d")  # one value per point (step1.subset)

    def __post_init__(self) -> None:
        self.N, self.D, self.loss = (np.asarray(v, dtype=float) for v in (self.N, self.D, self.loss))
        self.log_n_ref, self.log_d_ref = float(np.log(self.N).mean()), float(np.log(self.D).mean())
        self.log_n, self.log_d = np.log(self.N) - self.log_n_ref, np.log(self.D) - self.log_d_ref
        term, floor = _term_bounds(self.loss), _floor_bounds(self.loss)
        self.lower = np.array([term[0], EXPONENT_BOUNDS[0], term[0], floor[0]])
        self.upper = np.array([term[1], EXPONENT_BOUNDS[1], term[1], floor[1]])

    def residuals(
        self, theta: np.ndarray, log_loss: np.ndarray, points: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Residuals [B, M] in units of delta and Jacobian [B, 4, M]; `points` [B, K]: each problem's
        own subset of the points (log_loss then [B, K])."""
        log_n, log_d = (self.log_n, self.log_d) if points is None else (self.log_n[points], self.log_d[points])
        a, alpha, b, e = (theta[:, i : i + 1] for i in range(4))
        size_term = np.exp(a - alpha * log_n)
        data_term = np.exp(b - alpha * log_d)
        floor = np.exp(e) * np.ones_like(size_term)
        predicted = size_term + data_term + floor
        residual = (np.log(predicted) - log_loss) / self.delta
        jacobian = np.stack([size_term, -size_term * log_n - data_term * log_d, data_term, floor], axis=1)
        return residual, jacobian / (predicted * self.delta)[:, None, :]

    def starts(self) -> np.ndarray:
        grid = []
        for alpha in EXPONENT_GRID:
            a, b, e = _projected(
                [np.exp(-alpha * self.log_n), np.exp(-alpha * self.log_d), np.ones_like(self.loss)],
                self.loss,
                self.lower[[0, 2, 3]],
                self.upper[[0, 2, 3]],
            )
            grid.append((a, alpha, b, e))
        return np.clip(np.array(grid), self.lower, self.upper)

    def predict(self, theta: np.ndarray, N, D) -> np.ndarray:
        a, alpha, b, e = (theta[:, i : i + 1] for i in range(4))
        return _size_and_data(self, a, alpha, b, alpha, e, N, D)

    def to_fit(self, theta: np.ndarray, converged: bool, n_starts: int) -> LawFit:
        a, alpha, b, e = (float(v) for v in theta)
        params = {
            "A": math.exp(a + alpha * self.log_n_ref),
            "alpha": alpha,
            "B": math.exp(b + alpha * self.log_d_ref),
            "E": math.exp(e),
        }
        return _law_fit(self, "ic-tied", params, theta, converged, n_starts)


@dataclass
class ComputeProblem:
    """L(N, D) = A / C^gamma + E, C = 6 N D, on a task's points."""

    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    delta: float = 1e-3
    names = ("A", "gamma", "E")
    point_arrays = ("N", "D", "loss", "log_c")

    def __post_init__(self) -> None:
        self.N, self.D, self.loss = (np.asarray(v, dtype=float) for v in (self.N, self.D, self.loss))
        log_c = np.log(COMPUTE_PER_TOKEN * self.N * self.D)
        self.log_c_ref = float(log_c.mean())
        self.log_c = log_c - self.log_c_ref
        term, floor = _term_bounds(self.loss), _floor_bounds(self.loss)
        self.lower = np.array([term[0], EXPONENT_BOUNDS[0], floor[0]])
        self.upper = np.array([term[1], EXPONENT_BOUNDS[1], floor[1]])

    def residuals(
        self, theta: np.ndarray, log_loss: np.ndarray, points: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Residuals [B, M] in units of delta and Jacobian [B, 3, M]; `points` as for TiedProblem."""
        log_c = self.log_c if points is None else self.log_c[points]
        a, gamma, e = (theta[:, i : i + 1] for i in range(3))
        compute_term = np.exp(a - gamma * log_c)
        floor = np.exp(e) * np.ones_like(compute_term)
        predicted = compute_term + floor
        residual = (np.log(predicted) - log_loss) / self.delta
        jacobian = np.stack([compute_term, -compute_term * log_c, floor], axis=1)
        return residual, jacobian / (predicted * self.delta)[:, None, :]

    def starts(self) -> np.ndarray:
        grid = []
        for gamma in EXPONENT_GRID:
            a, e = _projected(
                [np.exp(-gamma * self.log_c), np.ones_like(self.loss)],
                self.loss,
                self.lower[[0, 2]],
                self.upper[[0, 2]],
            )
            grid.append((a, gamma, e))
        return np.clip(np.array(grid), self.lower, self.upper)

    def predict(self, theta: np.ndarray, N, D) -> np.ndarray:
        n, d, shape = _flat(N, D)
        a, gamma, e = (theta[:, i : i + 1] for i in range(3))
        log_c = np.log(COMPUTE_PER_TOKEN * n * d) - self.log_c_ref
        return (np.exp(a - gamma * log_c) + np.exp(e)).reshape(len(theta), *shape)

    def to_fit(self, theta: np.ndarray, converged: bool, n_starts: int) -> LawFit:
        a, gamma, e = (float(v) for v in theta)
        params = {"A": math.exp(a + gamma * self.log_c_ref), "gamma": gamma, "E": math.exp(e)}
        return _law_fit(self, "ic-compute", params, theta, converged, n_starts)


@dataclass
class SharedProblem:
    """L_t(N, D) = A_t / N^alpha + B_t / D^beta + E_t for every task t at once (points concatenated)."""

    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    task_index: np.ndarray
    """the task (index into `tasks`) of each point"""
    tasks: list[str]
    delta: float = 1e-3
    point_arrays = ("N", "D", "loss", "task_index", "log_n", "log_d")

    def __post_init__(self) -> None:
        self.N, self.D, self.loss = (np.asarray(v, dtype=float) for v in (self.N, self.D, self.loss))
        self.task_index = np.asarray(self.task_index, dtype=int)
        self.log_n_ref, self.log_d_ref = float(np.log(self.N).mean()), float(np.log(self.D).mean())
        self.log_n, self.log_d = np.log(self.N) - self.log_n_ref, np.log(self.D) - self.log_d_ref
        lower, upper = [EXPONENT_BOUNDS[0]] * 2, [EXPONENT_BOUNDS[1]] * 2
        for task in range(len(self.tasks)):
            loss = self.loss[self.task_index == task]
            term, floor = _term_bounds(loss), _floor_bounds(loss)
            lower += [term[0], term[0], floor[0]]
            upper += [term[1], term[1], floor[1]]
        self.lower, self.upper = np.array(lower), np.array(upper)
        self.names = ["alpha", "beta"] + [f"{name}[{task}]" for task in self.tasks for name in ("A", "B", "E")]
        # Row of each compact-Jacobian row (alpha, beta, then the point's task's a, b, e) in the full one, per task.
        tasks = np.arange(len(self.tasks))
        self._rows = np.vstack([np.zeros_like(tasks), np.ones_like(tasks), *(2 + 3 * tasks + own for own in range(3))])
        pairs = [(k, m) for k in range(5) for m in range(5) if max(k, m) >= 2]  # pairs that are not alpha/beta's own
        self._pair_index = [5 * k + m for k, m in pairs]
        self._pair_rows = np.array([self._rows[k] for k, _ in pairs])  # [pairs, T]
        self._pair_columns = np.array([self._rows[m] for _, m in pairs])

    def residuals(self, theta: np.ndarray, log_loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Residuals [B, M] in units of delta and the Jacobian [B, P, M]."""
        residual, compact = self.compact_residuals(theta, log_loss)
        jacobian = np.zeros((len(theta), len(self.lower), len(self.loss)))
        jacobian[:, 0:2, :] = compact[:, 0:2, :]
        first, columns = 2 + 3 * self.task_index, np.arange(len(self.loss))
        for own in range(3):
            jacobian[:, first + own, columns] = compact[:, 2 + own, :]
        return residual, jacobian

    def compact_residuals(self, theta: np.ndarray, log_loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Residuals [B, M] and the compact Jacobian [B, 5, M]: each point's derivatives by alpha, beta
        and its own task's a, b, e (the others are 0); `products` reduces it for batched.solve."""
        alpha, beta = theta[:, 0:1], theta[:, 1:2]
        per_task = theta[:, 2:].reshape(len(theta), len(self.tasks), 3)[:, self.task_index, :]  # [B, M, 3]
        size_term = np.exp(per_task[:, :, 0] - alpha * self.log_n)
        data_term = np.exp(per_task[:, :, 1] - beta * self.log_d)
        floor = np.exp(per_task[:, :, 2])
        predicted = size_term + data_term + floor
        residual = (np.log(predicted) - log_loss) / self.delta
        jacobian = np.stack([-size_term * self.log_n, -data_term * self.log_d, size_term, data_term, floor], axis=1)
        return residual, jacobian / (predicted * self.delta)[:, None, :]

    def products(
        self, compact: np.ndarray, gradient_weights: np.ndarray, curvature_weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """J g [B, P] and J diag(c) J^T [B, P, P] from the compact Jacobian [B, 5, M]: per task sums of
        the 5 x 5 products, placed in the full matrix (26 parameters for 8 tasks: 30x fewer
        multiplications than the full Jacobian's)."""
        n_sets, n_tasks = len(compact), len(self.tasks)
        task_onehot = (self.task_index[:, None] == np.arange(n_tasks)[None, :]).astype(float)  # [M, T]
        per_task = np.matmul(compact * gradient_weights[:, None, :], task_onehot)  # [B, 5, T]
        gradient = np.empty((n_sets, len(self.lower)))
        gradient[:, 0:2] = per_task[:, 0:2].sum(axis=2)
        gradient[:, 2:] = per_task[:, 2:].transpose(0, 2, 1).reshape(n_sets, 3 * n_tasks)
        weighted = compact * curvature_weights[:, None, :]
        pairs = (weighted[:, :, None, :] * compact[:, None, :, :]).reshape(n_sets, 25, -1)
        pair_sums = np.matmul(pairs, task_onehot)  # [B, 25, T]
        normal = np.zeros((n_sets, len(self.lower), len(self.lower)))
        normal[:, 0:2, 0:2] = pair_sums[:, [0, 1, 5, 6]].sum(axis=2).reshape(n_sets, 2, 2)
        normal[:, self._pair_rows, self._pair_columns] = pair_sums[:, self._pair_index]
        return gradient, normal

    def starts(self) -> np.ndarray:
        grid = []
        for alpha, beta in itertools.product(EXPONENT_GRID, EXPONENT_GRID):
            row = [alpha, beta]
            for task in range(len(self.tasks)):
                mine = self.task_index == task
                first = 2 + 3 * task
                row += list(
                    _projected(
                        [np.exp(-alpha * self.log_n[mine]), np.exp(-beta * self.log_d[mine]), np.ones(int(mine.sum()))],
                        self.loss[mine],
                        self.lower[first : first + 3],
                        self.upper[first : first + 3],
                    )
                )
            grid.append(row)
        return np.clip(np.array(grid), self.lower, self.upper)

    def predict_task(self, theta: np.ndarray, task: int, N, D) -> np.ndarray:
        alpha, beta = theta[:, 0:1], theta[:, 1:2]
        a, b, e = (theta[:, 2 + 3 * task + i : 3 + 3 * task + i] for i in range(3))
        return _size_and_data(self, a, alpha, b, beta, e, N, D)

    def to_fit(self, theta: np.ndarray, converged: bool, n_starts: int) -> LawFit:
        params = {"alpha": float(theta[0]), "beta": float(theta[1])}
        for task in range(len(self.tasks)):
            params.update(
                {
                    f"{name}[{self.tasks[task]}]": value
                    for name, value in self.task_params(theta, task).items()
                    if name in ("A", "B", "E")
                }
            )
        return _law_fit(self, "shared", params, theta, converged, n_starts)

    def task_params(self, theta: np.ndarray, task: int) -> dict[str, float]:
        alpha, beta = float(theta[0]), float(theta[1])
        a, b, e = (float(v) for v in theta[2 + 3 * task : 5 + 3 * task])
        return {
            "A": math.exp(a + alpha * self.log_n_ref),
            "alpha": alpha,
            "B": math.exp(b + beta * self.log_d_ref),
            "beta": beta,
            "E": math.exp(e),
        }

    def task_fit(self, fit: LawFit, task: int) -> LawFit:
        """One task's view of the joint fit: its law, its share of the objective, its bounds."""
        objective, rmse, count = _summary(self, fit.theta, self.task_index == task)
        suffix = f"[{self.tasks[task]}]"
        at_bound = [
            name.removesuffix(suffix) for name in fit.at_bound if name in ("alpha", "beta") or name.endswith(suffix)
        ]
        return LawFit(
            "shared",
            self.task_params(fit.theta, task),
            objective,
            rmse,
            count,
            fit.n_starts,
            fit.converged,
            at_bound,
            fit.theta,
            SharedTask(self, task),
            fit.alternatives,
        )


@dataclass
class SharedTask:
    """Evaluates one task's law from the joint parameters (a LawFit's or bootstrap component's `problem`)."""

    problem: SharedProblem
    task: int

    def predict(self, theta: np.ndarray, N, D) -> np.ndarray:
        return self.problem.predict_task(theta, self.task, N, D)
