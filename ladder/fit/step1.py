"""Step 1: task loss from model size and data, L(N, D) = A / N^alpha + B / D^beta + E.

Objective: the sum of Huber(delta) of the log residuals log L_pred - log L (Hoffmann et al.),
minimised from every start of a grid of initial values (a vectorised Levenberg-Marquardt runs them
all at once, then L-BFGS-B polishes the best end points); the lowest objective wins.

The optimiser works in a conditioned parametrisation: theta = (a, alpha, b, beta, e) with
A / N^alpha = exp(a - alpha (log N - log N_ref)), B / D^beta = exp(b - beta (log D - log D_ref)),
E = exp(e), where N_ref and D_ref are the geometric means of the points. a and b are then the
log-sizes of the two terms at the middle of the ladder (well scaled, nearly uncorrelated with the
exponents), and A, B, E stay positive. Bounds: exponents in [0, 4]; each term between 1e-6 and 100
times the mean loss at the reference point; E between 1e-6 times the smallest loss and the largest.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from ladder.errors import LadderError
from ladder.fit import batched

PARAMS = ("A", "alpha", "B", "beta", "E")
N_PARAMS = len(PARAMS)
EXPONENT_BOUNDS = (0.0, 4.0)
# Grid of initial values: exponents x term sizes (as fractions of the mean loss) x E (fraction of the least loss).
EXPONENT_STARTS = (0.1, 0.3, 0.6, 1.2)
TERM_STARTS = (0.02, 0.15, 0.6)
E_STARTS = (0.1, 0.5, 0.9)
BOUND_TOLERANCE = 1e-6
POLISHED = 5  # best grid end points that L-BFGS-B polishes
ALTERNATIVES = 3  # other local optima kept as extra starts for the bootstrap refits
DISTINCT = 1e-2  # conditioned parameters closer than this are the same optimum
SCREEN_ITERATIONS = 40  # bootstrap refits: every start runs this long, the best then up to
REFIT_ITERATIONS = 300  # (Huber refits converge linearly: stopping early biases the intervals)


@dataclass
class Step1Fit:
    """A fitted L(N, D) = A / N^alpha + B / D^beta + E, with its diagnostics."""

    A: float
    """size-term coefficient"""
    alpha: float
    """size exponent"""
    B: float
    """data-term coefficient"""
    beta: float
    """data exponent"""
    E: float
    """irreducible loss"""
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
    at_bound: list[str] = field(default_factory=list)
    """parameters that ended on a bound (the fit may be limited by it)"""
    theta: np.ndarray = field(default_factory=lambda: np.zeros(N_PARAMS), repr=False)
    """conditioned parameters (warm start for refits)"""
    alternatives: np.ndarray = field(default_factory=lambda: np.zeros((0, N_PARAMS)), repr=False)
    """other local optima the grid found, best first (extra starts for refits)"""

    def predict(self, N, D) -> np.ndarray:
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return self.A / N**self.alpha + self.B / D**self.beta + self.E

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in PARAMS}


@dataclass
class Step1Problem:
    """Points and the conditioned parametrisation; evaluates the objective for one or many thetas."""

    N: np.ndarray
    """parameters of each point"""
    D: np.ndarray
    """tokens of each point"""
    loss: np.ndarray
    """observed loss of each point"""
    delta: float = 1e-3
    """Huber threshold on log residuals"""
    point_arrays = ("N", "D", "loss", "log_n", "log_d")  # one value per point (`subset`)

    def __post_init__(self) -> None:
        self.N, self.D, self.loss = (np.asarray(v, dtype=float) for v in (self.N, self.D, self.loss))
        self.log_n = np.log(self.N) - np.log(self.N).mean()
        self.log_d = np.log(self.D) - np.log(self.D).mean()
        self.log_n_ref = float(np.log(self.N).mean())
        self.log_d_ref = float(np.log(self.D).mean())
        scale = float(np.log(self.loss.mean()))
        term = (math.log(1e-6) + scale, math.log(100.0) + scale)
        self.lower = np.array(
            [term[0], EXPONENT_BOUNDS[0], term[0], EXPONENT_BOUNDS[0], math.log(1e-6 * self.loss.min())]
        )
        self.upper = np.array([term[1], EXPONENT_BOUNDS[1], term[1], EXPONENT_BOUNDS[1], math.log(self.loss.max())])

    def residuals(self, theta: np.ndarray, log_loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log residuals in units of delta and their Jacobian; theta [B, 5], log_loss [B or 1, M]."""
        a, alpha, b, beta, e = (theta[:, i : i + 1] for i in range(N_PARAMS))
        size_term = np.exp(a - alpha * self.log_n)
        data_term = np.exp(b - beta * self.log_d)
        floor = np.exp(e) * np.ones_like(size_term)
        predicted = size_term + data_term + floor
        residual = (np.log(predicted) - log_loss) / self.delta
        jacobian = np.stack([size_term, -size_term * self.log_n, data_term, -data_term * self.log_d, floor], axis=1)
        return residual, jacobian / (predicted * self.delta)[:, None, :]

    def starts(self) -> np.ndarray:
        """The grid of initial values (conditioned parameters)."""
        mean, least = self.loss.mean(), self.loss.min()
        grid = [
            (math.log(t1 * mean), alpha, math.log(t2 * mean), beta, math.log(e * least))
            for alpha, beta, t1, t2, e in itertools.product(
                EXPONENT_STARTS, EXPONENT_STARTS, TERM_STARTS, TERM_STARTS, E_STARTS
            )
        ]
        return np.clip(np.array(grid), self.lower, self.upper)

    def predict(self, theta: np.ndarray, N: float, D: float) -> np.ndarray:
        """L(N, D) for many conditioned thetas [B, 5]."""
        return predict_theta(self, theta, N, D)

    def to_fit(self, theta: np.ndarray, converged: bool, n_starts: int) -> Step1Fit:
        residual, _ = self.residuals(theta[None, :], np.log(self.loss)[None, :])
        value = float(batched.objective(residual, np.ones_like(residual), huber=True)[0]) * self.delta**2
        a, alpha, b, beta, e = (float(v) for v in theta)
        return Step1Fit(
            A=math.exp(a + alpha * self.log_n_ref),
            alpha=alpha,
            B=math.exp(b + beta * self.log_d_ref),
            beta=beta,
            E=math.exp(e),
            objective=value,
            rmse_log=float(np.sqrt(np.mean((residual * self.delta) ** 2))),
            n_points=len(self.loss),
            n_starts=n_starts,
            converged=converged,
            at_bound=at_bound(theta, self.lower, self.upper, PARAMS),
            theta=theta.copy(),
        )


def at_bound(theta: np.ndarray, lower: np.ndarray, upper: np.ndarray, names) -> list[str]:
    """The names of the parameters that ended on a bound (within BOUND_TOLERANCE of its span)."""
    span = upper - lower
    return [
        names[i]
        for i in range(len(theta))
        if min(theta[i] - lower[i], upper[i] - theta[i]) <= BOUND_TOLERANCE * max(span[i], 1.0)
    ]


def check_points(N: np.ndarray, D: np.ndarray, loss: np.ndarray, what: str, n_params: int = N_PARAMS) -> None:
    """Raise a LadderError when the points cannot determine the law's `n_params` parameters."""
    values = np.stack([N, D, loss]).astype(float)
    if not np.isfinite(values).all():
        raise LadderError(f"{what}: step 1 points contain NaN or infinite values")
    if (values <= 0).any():
        raise LadderError(f"{what}: step 1 needs N, D and loss > 0")
    if len(np.unique(N)) < 2:
        raise LadderError(f"{what}: step 1 needs at least 2 model sizes, the ladder has one (N={int(N[0])})")
    if len(np.unique(D)) < 2:
        raise LadderError(f"{what}: step 1 needs at least 2 token counts D")
    if len(loss) < n_params:
        raise LadderError(f"{what}: step 1 has {len(loss)} ladder run(s), fewer than its {n_params} parameters")


def _rank(result) -> float:
    # Ends that agree to 1e-9 are the same optimum: prefer one the optimiser reports as converged.
    return float(result.fun) * (1.0 if result.success else 1.0 + 1e-9)


def fit_step1(N, D, loss, *, delta: float = 1e-3, what: str = "step 1") -> Step1Fit:
    """Multi-start L-BFGS-B fit of L(N, D); the lowest objective over the grid of starts wins."""
    problem = Step1Problem(N, D, loss, delta)
    check_points(problem.N, problem.D, problem.loss, what)
    return fit_problem(problem, what)


def fit_problem(problem, what: str):
    """Minimise any step-1 problem's Huber objective from every start of its grid; returns its fit.

    A problem has `loss` (observed, one per point), `lower` and `upper` (bounds of its conditioned
    parameters), `residuals(theta [B, P], log_loss [B or 1, M])` -> (residuals in units of delta
    [B, M], Jacobian [B, P, M]), `starts()` [S, P] and `to_fit(theta, converged, n_starts)`.
    """
    log_loss = np.log(problem.loss)[None, :]
    ones = np.ones_like(log_loss)
    n_params = len(problem.lower)

    def value_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        residual, jacobian = problem.residuals(theta[None, :], log_loss)
        psi = np.clip(residual, -1.0, 1.0)
        return float(batched.objective(residual, ones, huber=True)[0]), jacobian[0] @ psi[0]

    # Every start of the grid is run at once by the vectorised solver; L-BFGS-B then polishes the
    # best distinct end points (running it from all starts costs ~25x more and ends in the same place).
    starts = problem.starts()
    residuals, products = solver_form(problem)
    ends, values, order = run_starts(
        lambda t: residuals(t, log_loss),
        starts,
        len(problem.loss),
        problem.lower,
        problem.upper,
        huber=True,
        products=products,
    )
    alternatives = _distinct(ends[order[np.isfinite(values[order])]], ALTERNATIVES + 1)
    polish_from = [ends[i] for i in order[:POLISHED]] + [starts[order[0]]]
    bounds = list(zip(problem.lower, problem.upper))
    best = None
    for start in polish_from:
        result = minimize(
            value_and_gradient,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
        )
        if np.isfinite(result.fun) and (best is None or _rank(result) < _rank(best)):
            best = result
    if best is None:
        raise LadderError(f"{what}: the optimiser failed from every start (non-finite objective)")
    fit = problem.to_fit(best.x, converged=bool(best.success), n_starts=len(starts))
    others = [a for a in alternatives if np.abs(a - best.x).max() > DISTINCT]
    fit.alternatives = np.array(others).reshape(-1, n_params)[:ALTERNATIVES]  # [0, P] when the optimum is unique
    return fit


def run_starts(
    residuals,
    starts: np.ndarray,
    n_points: int,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    huber: bool,
    products: batched.Products | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every start [S, P] of a multi-start grid run at once by the vectorised solver on the same
    `n_points` points (`residuals(theta [B, P])` -> residuals, Jacobian as for batched.solve, which
    `products` reduces when it is compact): (end points [S, P], their objectives [S], the ends'
    order from the best, non-finite last)."""
    ends, values = batched.solve(
        lambda t, rows: residuals(t),
        starts,
        np.ones((len(starts), n_points)),
        lower,
        upper,
        huber=huber,
        products=products,
    )
    return ends, values, np.argsort(np.where(np.isfinite(values), values, np.inf))


def solver_form(problem) -> tuple:
    """The residual function and Jacobian products (batched.solve's `products`) to solve `problem`
    with: its compact Jacobian where it has one (the shared-exponent law's), else its full one."""
    if hasattr(problem, "compact_residuals"):
        return problem.compact_residuals, problem.products
    return problem.residuals, None


def _distinct(thetas: np.ndarray, count: int) -> np.ndarray:
    """The first `count` thetas that differ from every earlier kept one by more than DISTINCT."""
    kept: list[np.ndarray] = []
    for theta in thetas:
        if all(np.abs(theta - other).max() > DISTINCT for other in kept):
            kept.append(theta)
            if len(kept) == count:
                break
    return np.array(kept).reshape(-1, thetas.shape[1])


def refit_step1(
    problem, loss: np.ndarray, weights: np.ndarray, theta: np.ndarray, others: np.ndarray, *, newton: bool = False
) -> np.ndarray:
    """Refit many resampled data sets of any step-1 problem at once; returns the best theta per set [B, P].

    loss [B, M] (or [1, M]: every data set has the same values and differs by its weights),
    weights [B, M] (they multiply each point's Huber term), theta [P] the full-data fit. Each data
    set starts one Gauss-Newton step away from `theta` (with the shared Jacobian) and also from
    every row of `others` [S, P] (other starts, in case its optimum lies elsewhere). `newton`: as
    for batched.solve.
    """
    log_loss = np.log(loss)
    shared = len(log_loss) == 1

    def rows_of(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return values if shared else values[rows]

    n_params = len(theta)
    residual, jacobian = problem.residuals(theta[None, :], log_loss)
    near = batched.newton_starts(residual, jacobian[0], weights, theta, problem.lower, problem.upper, huber=True)
    n_sets, n_starts = len(weights), 1 + len(others)
    theta0 = np.concatenate([near[:, None, :], np.broadcast_to(others, (n_sets, len(others), n_params))], axis=1)
    residuals, products = solver_form(problem)

    def solve(set_log_loss: np.ndarray, theta_start: np.ndarray, set_weights: np.ndarray, max_iter: int, rtol: float):
        return batched.solve(
            lambda t, rows: residuals(t, rows_of(set_log_loss, rows)),
            theta_start,
            set_weights,
            problem.lower,
            problem.upper,
            huber=True,
            max_iter=max_iter,
            rtol=rtol,
            newton=newton,
            products=products,
        )

    # Every start runs briefly; only the best per data set is then run to convergence (Huber's
    # reweighting converges linearly, and stopping early would bias the intervals).
    rows_log_loss = log_loss if shared else np.repeat(log_loss, n_starts, axis=0)
    fitted, value = solve(
        rows_log_loss, theta0.reshape(-1, n_params), np.repeat(weights, n_starts, axis=0), SCREEN_ITERATIONS, 1e-8
    )
    best = np.argmin(value.reshape(n_sets, n_starts), axis=1)
    chosen = fitted.reshape(n_sets, n_starts, n_params)[np.arange(n_sets), best]
    return solve(log_loss, chosen, weights, REFIT_ITERATIONS, 1e-12)[0]


def subset(problem, points: np.ndarray):
    """A step-1 problem on some of its points (`points`: indices), in the same parametrisation and
    bounds, so that its thetas and the whole problem's are interchangeable: every array of its
    `point_arrays` taken at `points`."""
    part = copy.copy(problem)
    for name in problem.point_arrays:
        setattr(part, name, getattr(problem, name)[points])
    return part


def predict_theta(problem: Step1Problem, theta: np.ndarray, N: float, D: float) -> np.ndarray:
    """L(N, D) for many conditioned thetas [B, 5]."""
    a, alpha, b, beta, e = theta.T
    log_n = math.log(N) - problem.log_n_ref
    log_d = math.log(D) - problem.log_d_ref
    return np.exp(a - alpha * log_n) + np.exp(b - beta * log_d) + np.exp(e)
