"""The femto runs the train tests compare: overrides, losses, and an old-format checkpoint."""

import json
import random
import shutil

import torch

FEMTO_BATCH_TOKENS = 8 * 256  # femto's batch rule: 8 sequences of 256 tokens


def femto_overrides(steps: int) -> list[str]:
    return ["model=femto", f"train.tokens={steps * FEMTO_BATCH_TOKENS}", "train.log_interval=1"]


REFERENCE_STEPS = 60


def losses(run_dir) -> dict[int, float]:
    """step -> training loss from a run's metrics.jsonl."""
    return {row["step"]: row["loss"] for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def write_legacy_checkpoint(run_dir, cfg):
    """Turn the run's newest sharded checkpoint into checkpoint/latest.pt and config.yaml as the
    trainer wrote them before sharded checkpoints (torch.save of the plain model's and optimizer's
    state dicts, the generators as random.getstate / torch.get_rng_state; the config without the
    keys added since), from the real trainer state."""
    from ladder.model import decoder_from_config
    from ladder.runs.directory import RunDir
    from ladder.sizes import ModelShape
    from ladder.train.checkpoint import load_into
    from ladder.train.optim import build_optimizer

    run = RunDir(run_dir)
    sharded = run.latest_checkpoint
    trainer = json.loads((sharded / "trainer.json").read_text())
    model = decoder_from_config(ModelShape(**trainer["shape"]), cfg.model)
    optimizer = build_optimizer(cfg.optim, model, 1.0, torch.device("cpu"))
    load_into(sharded, model, optimizer, rank=0, device=torch.device("cpu"), distributed=False)  # and the generators
    config = trainer["config"]
    del config["model"]["vocab_multiple"], config["train"]["z_loss"]
    same = ("schedule", "step", "tokens", "data", "stability", "elapsed", "last_loss", "shape")
    legacy = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {"python": random.getstate(), "torch": torch.get_rng_state()},
        "config": config,
    } | {key: trainer[key] for key in same}
    shutil.rmtree(run.checkpoint_dir)
    run.checkpoint_dir.mkdir()
    torch.save(legacy, run.checkpoint_dir / "latest.pt")
    run.write_config(config)
    return run.checkpoint_dir / "latest.pt"
