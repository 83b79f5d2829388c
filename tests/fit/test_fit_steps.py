"""Step 1 and step 2 recover the parameters that generated the data (the global optimum)."""

from __future__ import annotations

import numpy as np
import pytest
from fit_synthetic import loss_law, make_table, sigmoid_law

from ladder.errors import LadderError
from ladder.fit.points import step1_points, step2_points, trailing_mean
from ladder.fit.step1 import Step1Problem, fit_step1, predict_theta, refit_step1
from ladder.fit.step2 import fit_step2

# Three very different scales: the paper's (1e8-1e9 parameters), a CPU ladder (1e4-1e5) and a
# ladder whose data term dominates. One grid of starts must find each global optimum.
CASES = [
    ({"A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28, "E": 1.69}, [2e7, 5e7, 1.2e8, 3e8]),
    ({"A": 8.0, "alpha": 0.45, "B": 60.0, "beta": 0.3, "E": 0.9}, [1.2e4, 2.5e4, 4.1e4, 8.6e4]),
    ({"A": 2.0, "alpha": 0.15, "B": 4000.0, "beta": 0.5, "E": 0.3}, [1e6, 3e6, 1e7, 3e7]),
]


def _grid(sizes):
    n, d = np.meshgrid(sizes, [1, 2, 5, 10, 20])
    n = n.ravel()
    return n, d.ravel() * 20 * n


@pytest.mark.parametrize("truth,sizes", CASES)
def test_step1_recovers_known_parameters(truth, sizes):
    n, d = _grid(sizes)
    fit = fit_step1(n, d, loss_law(truth, n, d))
    for name, value in truth.items():
        assert getattr(fit, name) == pytest.approx(value, rel=2e-3), name
    assert fit.converged and fit.objective < 1e-10 and not fit.at_bound
    # Extrapolation 100x in compute matches the law.
    assert fit.predict(sizes[-1] * 10, sizes[-1] * 2000) == pytest.approx(
        loss_law(truth, sizes[-1] * 10, sizes[-1] * 2000), rel=1e-4
    )


def _noisy(case: int, seed: int):
    """A case's grid with 1% noise on its loss: (N, D, loss, the multi-start fit, the problem, the rng drawn from)."""
    truth, sizes = CASES[case]
    n, d = _grid(sizes)
    rng = np.random.default_rng(seed)
    loss = loss_law(truth, n, d) * (1 + 0.01 * rng.standard_normal(len(n)))
    return n, d, loss, fit_step1(n, d, loss), Step1Problem(n, d, loss), rng


def test_step1_batched_refit_matches_lbfgsb():
    n, d, loss, fit, problem, _ = _noisy(0, seed=1)
    theta = refit_step1(problem, loss[None, :], np.ones((1, len(n))), problem.starts()[0], problem.starts()[::40])
    refit = problem.to_fit(theta[0], converged=True, n_starts=1)
    assert refit.objective == pytest.approx(fit.objective, rel=1e-5)
    assert predict_theta(problem, theta, 1e10, 1e12)[0] == pytest.approx(float(fit.predict(1e10, 1e12)), rel=1e-3)


def test_step1_rejects_underdetermined_points():
    with pytest.raises(LadderError, match="fewer than its 5 parameters"):
        fit_step1([1e6, 2e6, 3e6, 4e6], [1e8, 2e8, 3e8, 4e8], [3.0, 2.9, 2.8, 2.7])
    with pytest.raises(LadderError, match="at least 2 model sizes"):
        fit_step1([1e6] * 6, np.geomspace(1e8, 1e10, 6), np.linspace(3, 2, 6))


@pytest.mark.parametrize(
    "truth,chance",
    [
        ({"a": -0.7, "k": 5.0, "L0": 1.0, "b": 0.95}, 0.25),
        ({"a": -0.45, "k": 12.0, "L0": 0.6, "b": 1.0}, 0.5),
        ({"a": -0.8, "k": 2.0, "L0": 3.0, "b": 1.0}, 0.2),
    ],
)
def test_step2_recovers_known_parameters(truth, chance):
    loss = np.linspace(0.3 * truth["L0"], 2.5 * truth["L0"], 300)
    rng = np.random.default_rng(0)
    acc = sigmoid_law(truth, loss) + 0.002 * rng.standard_normal(len(loss))
    fit = fit_step2(loss, acc, chance)
    assert fit.converged
    for name, value in truth.items():
        assert getattr(fit, name) == pytest.approx(value, rel=0.03, abs=0.01), name


def test_step2_near_chance_noise_does_not_crash():
    rng = np.random.default_rng(3)
    loss = np.linspace(2.0, 3.0, 200)
    acc = 0.25 + 0.02 * rng.standard_normal(len(loss))
    fit = fit_step2(loss, acc, 0.25)
    assert np.isfinite([fit.a, fit.k, fit.L0, fit.b]).all()
    assert -1 <= fit.a <= 0 and 0 <= fit.b <= 1
    assert 0.0 <= float(fit.predict(1.5)) <= 1.0


def test_points_follow_the_paper_preparation():
    table = make_table(checkpoints=20)
    ladder = table[table["role"] == "ladder"]
    points = step1_points(ladder, last_n=5)
    assert len(points.runs) == 16 and points.runs[0] == "s1-1xC"
    first = ladder[ladder["run"] == "s1-1xC"].sort_values("step")
    assert points.loss[0] == pytest.approx(first["loss"].tail(5).mean())
    assert points.D[0] == first["D"].iloc[-1]
    step2 = step2_points(ladder, points.runs, skip_fraction=0.1, window=5)
    assert len(step2.loss) == 16 * 18  # ceil(10% of 20) = 2 dropped per run, every point kept
    assert step2.loss[0] == pytest.approx(first["loss"].iloc[2])  # the first average is over one point
    assert step2.loss[4] == pytest.approx(first["loss"].iloc[2:7].mean())
    assert trailing_mean(np.array([1.0, 2.0, 3.0, 4.0]), 2).tolist() == [1.0, 1.5, 2.5, 3.5]


@pytest.mark.slow
def test_bootstrap_refits_reach_the_full_multistart_optimum():
    n, d, loss, fit, problem, rng = _noisy(1, seed=2)
    weights = rng.multinomial(len(n), np.full(len(n), 1 / len(n)), size=12).astype(float)
    others = np.vstack([fit.alternatives, problem.starts()[len(problem.starts()) // 2]])
    theta = refit_step1(problem, np.tile(loss, (12, 1)), weights, fit.theta, others)
    fast = predict_theta(problem, theta, 4e5, 4e8)
    for replicate in range(12):
        chosen = np.repeat(np.arange(len(n)), weights[replicate].astype(int))
        full = fit_step1(n[chosen], d[chosen], loss[chosen])
        assert fast[replicate] == pytest.approx(float(full.predict(4e5, 4e8)), rel=5e-3)


def test_newton_starts_give_every_replicate_a_start_when_the_step_is_singular():
    """A singular normal matrix (two parameters with the same, huge derivative: the 1e-12 ridge
    vanishes beside it) falls back to the shared optimum for every replicate, even when the
    residuals are one shared row."""
    from ladder.fit import batched

    jacobian = np.full((2, 5), 1e100)
    weights = np.ones((7, 5))
    theta = np.array([1.0, 2.0])
    starts = batched.newton_starts(
        np.ones((1, 5)), jacobian, weights, theta, np.full(2, -10.0), np.full(2, 10.0), huber=False
    )
    assert starts.shape == (7, 2)
    assert np.array_equal(starts, np.tile(theta, (7, 1)))
