"""Shared fixtures: one prepared corpus per session, configs for tiny runs, the reference run
(helpers the tests import are in femto_runs.py: a conftest is not a module to import from, and
another folder's conftest would shadow it)."""

import pytest
import torch
from femto_runs import REFERENCE_STEPS, femto_overrides

from ladder.data import prepare_corpus
from ladder.hydra_app import compose_config

# One intra-op thread: the tests' models are tiny, and on a shared CPU more threads only contend.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def prepared_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    prepare_corpus(compose_config([f"data.prepared_root={root}"]).data, progress=False)
    return root


@pytest.fixture
def make_cfg(prepared_root, monkeypatch):
    """compose_config for a run in `run_dir` on the shared corpus, wandb off."""
    monkeypatch.setenv("WANDB_MODE", "disabled")

    def make(run_dir, *overrides):
        return compose_config(
            [f"run_dir={run_dir}", f"data.prepared_root={prepared_root}", "wandb.mode=disabled", *overrides]
        )

    return make


@pytest.fixture(scope="session")
def reference(tmp_path_factory, prepared_root):
    """An uninterrupted single-process femto run of REFERENCE_STEPS steps (baseline of resume and DDP)."""
    from ladder.train import run_training

    run_dir = tmp_path_factory.mktemp("reference") / "femto-ref"
    cfg = compose_config(
        [
            f"run_dir={run_dir}",
            f"data.prepared_root={prepared_root}",
            "wandb.mode=disabled",
            *femto_overrides(REFERENCE_STEPS),
        ]
    )
    outcome = run_training(cfg)
    assert outcome.status == "done" and outcome.step == REFERENCE_STEPS
    return run_dir
