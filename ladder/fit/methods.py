"""Step-1 methods: which loss laws a fit uses, on which points, and how their predictions combine.

- `paper`: the paper's L(N, D) = A / N^alpha + B / D^beta + E on one point per run (step1.py);
  kept to reproduce the paper.
- `ic-tied`: L = A / N^alpha + B / D^alpha + E on every checkpoint after the first `skip_fraction`
  of each run (intermediate checkpoints, IC; D the tokens so far, the loss not smoothed).
- `ic-compute`: L = A / C^gamma + E, C = 6 N D, on the same checkpoints.
- `shared`: L_t = A_t / N^alpha + B_t / D^beta + E_t on one point per run, alpha and beta shared by
  every task of the table (one fit of all tasks: they must share their runs).
- `ensemble` (the default): L = exp(mean of log L over ic-tied, ic-compute and shared), the
  geometric mean of the three predictions.

The laws are defined in laws.py; step 2 is the same for every method. On the paper's ladder the
ensemble's 7B errors and its backtest errors are both lower than the paper's (docs/fit.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ladder.errors import LadderError
from ladder.fit.laws import COMPUTE_PER_TOKEN, ComputeProblem, LawFit, SharedProblem, TiedProblem
from ladder.fit.points import CheckpointPoints, Step1Points
from ladder.fit.step1 import check_points, fit_problem

METHODS = ("ensemble", "paper", "ic-tied", "ic-compute", "shared")
DEFAULT_METHOD = "ensemble"
LAWS = {
    "paper": ("paper",),
    "ic-tied": ("ic-tied",),
    "ic-compute": ("ic-compute",),
    "shared": ("shared",),
    "ensemble": ("ic-tied", "ic-compute", "shared"),
}
CHECKPOINT_LAWS = {"ic-tied": TiedProblem, "ic-compute": ComputeProblem}
LAW_PARAMS = {
    "paper": ("A", "alpha", "B", "beta", "E"),
    "ic-tied": ("A", "alpha", "B", "E"),
    "ic-compute": ("A", "gamma", "E"),
    "shared": ("A", "alpha", "B", "beta", "E"),
}


def uses_checkpoints(method: str) -> bool:
    return any(law in CHECKPOINT_LAWS for law in LAWS[method])


def uses_shared(method: str) -> bool:
    return "shared" in LAWS[method]


def param_names(method: str) -> list[str]:
    """The names of a method's step-1 parameters, as its fit's `as_dict` (and params.csv) spell them."""
    if method == "paper":
        return list(LAW_PARAMS["paper"])
    return [f"{law}.{param}" for law in LAWS[method] for param in LAW_PARAMS[law]]


def law_loss(law: str, params: dict[str, float], N, D) -> np.ndarray:
    """One law's L(N, D) from its parameters in the law's own units (LAW_PARAMS)."""
    N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
    if law == "ic-compute":
        return params["A"] / (COMPUTE_PER_TOKEN * N * D) ** params["gamma"] + params["E"]
    data_exponent = params["alpha"] if law == "ic-tied" else params["beta"]
    return params["A"] / N ** params["alpha"] + params["B"] / D**data_exponent + params["E"]


def method_loss(method: str, params: dict[str, float], N, D) -> np.ndarray:
    """A method's step-1 prediction from its parameters (`param_names`): the geometric mean of its laws'."""
    if method == "paper":
        return law_loss("paper", params, N, D)
    logs = [
        np.log(law_loss(law, {name: params[f"{law}.{name}"] for name in LAW_PARAMS[law]}, N, D)) for law in LAWS[method]
    ]
    return np.exp(np.mean(logs, axis=0))


@dataclass
class CombinedStep1:
    """A method's step 1 (other than the paper's): its laws, and their geometric-mean prediction."""

    laws: dict[str, LawFit]
    """the fitted laws by name"""

    def predict(self, N, D) -> np.ndarray:
        logs = [np.log(law.predict(N, D)) for law in self.laws.values()]
        return np.exp(np.mean(logs, axis=0))

    def as_dict(self) -> dict[str, float]:
        return {f"{name}.{param}": value for name, law in self.laws.items() for param, value in law.params.items()}

    @property
    def objective(self) -> float:
        return float(sum(law.objective for law in self.laws.values()))

    @property
    def rmse_log(self) -> float:
        return math.sqrt(float(np.mean([law.rmse_log**2 for law in self.laws.values()])))

    @property
    def n_points(self) -> int:
        return max(law.n_points for law in self.laws.values())

    @property
    def n_starts(self) -> int:
        return sum(law.n_starts for law in self.laws.values())

    @property
    def converged(self) -> bool:
        return all(law.converged for law in self.laws.values())

    @property
    def at_bound(self) -> list[str]:
        return [f"{name}.{param}" for name, law in self.laws.items() for param in law.at_bound]


def fit_checkpoint_laws(method: str, points: CheckpointPoints, delta: float, what: str) -> dict[str, LawFit]:
    """The method's laws fitted on a task's intermediate checkpoints."""
    fits = {}
    for name in LAWS[method]:
        if name in CHECKPOINT_LAWS:
            problem = CHECKPOINT_LAWS[name](points.N, points.D, points.loss, delta)
            check_points(problem.N, problem.D, problem.loss, f"{what} ({name})", len(problem.lower))
            fits[name] = fit_problem(problem, f"{what} ({name})")
    return fits


@dataclass
class SharedFit:
    """The shared-exponent law fitted on every task at once."""

    problem: SharedProblem
    """the joint problem (every task's points)"""
    fit: LawFit
    """the joint fit"""

    def task_fit(self, task: str) -> LawFit:
        return self.problem.task_fit(self.fit, self.problem.tasks.index(task))


def shared_problem(points: dict[str, Step1Points], delta: float, method: str) -> SharedProblem:
    """The joint problem of every task's step-1 points; refuses tasks that do not share their runs."""
    tasks = list(points)
    first = points[tasks[0]]
    for task in tasks[1:]:
        if points[task].runs != first.runs:
            missing = sorted(set(first.runs) ^ set(points[task].runs))
            raise LadderError(
                f"--method {method}: the shared-exponent fit needs every task on the same ladder runs, but task "
                f"{task!r} and task {tasks[0]!r} differ in {', '.join(missing) or 'run order'}; select tasks with "
                "--tasks or use --method paper"
            )
    own = 3 + (2 if len(tasks) == 1 else 1)  # each task's A, B, E and its part of the shared exponents
    for task in tasks:
        check_points(first.N, first.D, points[task].loss, f"task {task!r} (shared)", own)
    return SharedProblem(
        np.tile(first.N, len(tasks)),
        np.tile(first.D, len(tasks)),
        np.concatenate([points[task].loss for task in tasks]),
        np.repeat(np.arange(len(tasks)), len(first.runs)),
        tasks,
        delta,
    )


def fit_shared(points: dict[str, Step1Points], delta: float, method: str) -> SharedFit:
    """Fit the shared-exponent law on every task's step-1 points."""
    problem = shared_problem(points, delta, method)
    return SharedFit(problem, fit_problem(problem, "shared-exponent fit"))
