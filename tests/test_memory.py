"""The memory plan (ladder.memory) against what a real CPU step holds, and its refusals."""

import pytest
import torch
import torch.nn.functional as F

from ladder.errors import LadderError
from ladder.hydra_app import compose_config
from ladder.memory import GB, activation_bytes, choose_plan, default_micro_batch, memory_plan
from ladder.model import Decoder
from ladder.sizes import get_shape
from ladder.sweep.plan import format_plan, make_plan
from ladder.train.optim import build_optimizer


def storage_bytes(tensors) -> int:
    return sum(t.untyped_storage().nbytes() for t in {t.untyped_storage().data_ptr(): t for t in tensors}.values())


@pytest.mark.parametrize("preset", ["femto", "tiny", "base"])
def test_plan_matches_the_bytes_a_cpu_step_holds(preset):
    shape, micro = get_shape(preset), 4
    torch.manual_seed(0)
    model = Decoder(shape)
    optimizer = build_optimizer(compose_config([]).optim, model, 1e-3, torch.device("cpu"))
    tokens = torch.randint(0, shape.vocab_size, (micro, shape.seq_len))
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(tensor):  # every tensor autograd keeps for backward, once per storage, parameters aside
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())
    loss.backward()
    optimizer.step()
    plan = memory_plan(shape, parallel="ddp", world_size=1, micro_batch=micro, precision="fp32", kernels="cpu")
    assert plan.weights == storage_bytes(model.parameters())
    assert plan.gradients == storage_bytes(p.grad for p in model.parameters())
    moments = [state[key] for state in optimizer.state.values() for key in ("exp_avg", "exp_avg_sq")]
    assert plan.optimizer == storage_bytes(moments)
    assert plan.activations == pytest.approx(sum(saved.values()), rel=0.2)


def test_checkpointing_trades_activations_for_recomputation():
    shape = get_shape("1B")
    none, selective, full = (activation_bytes(shape, 8, mode) for mode in ("none", "selective", "full"))
    assert full < selective < none
    assert full < none / 3  # the blocks keep one d-vector per token; the head (log-probabilities) stays


def test_fsdp_shards_the_state_and_ddp_replicates_it():
    shape = get_shape("3B")
    ddp = memory_plan(shape, parallel="ddp", world_size=8, micro_batch=4)
    fsdp = memory_plan(shape, parallel="fsdp", world_size=8, micro_batch=4)
    assert ddp.state == 8 * fsdp.state or abs(ddp.state - 8 * fsdp.state) <= 8 * 3
    hybrid = memory_plan(shape, parallel="fsdp", world_size=16, shard_size=8, micro_batch=4)
    assert hybrid.state == fsdp.state  # sharded within a node of 8, replicated across nodes
    # The arithmetic: 56 GB of weights, gradients and AdamW state, 14 GB of DDP buckets,
    # 7 GB of bf16 copies: the 3B rung cannot run under DDP on an 80 GB GPU.
    assert ddp.state / GB == pytest.approx(56, abs=0.5) and ddp.buffers / GB == pytest.approx(14 + 7, abs=0.5)


def test_micro_batch_by_size_follows_olmo_core():
    assert [default_micro_batch(get_shape(size), 64) for size in ("190M", "1B", "3B", "7B")] == [8, 8, 4, 2]


def test_a_rung_that_cannot_fit_is_refused_in_one_line_saying_what_fits():
    shape = get_shape("3B")
    options = dict(
        world_size=8,
        per_rank=8,
        micro_batch=None,
        checkpointing="none",
        precision="bf16",
        optimizer="adamw",
        gpu_memory_gb=80,
    )
    with pytest.raises(
        LadderError, match=r"needs .* GB with train.parallel=ddp .*; it fits in .* train.parallel=fsdp"
    ) as refused:
        choose_plan(shape, parallel="ddp", **options)
    assert "\n" not in str(refused.value)
    assert choose_plan(shape, parallel="auto", **options).parallel == "fsdp"  # auto shards what DDP cannot hold
    with pytest.raises(LadderError, match="even .* use more GPUs"):
        choose_plan(get_shape("13B"), parallel="auto", **{**options, "world_size": 1, "gpu_memory_gb": 40})


def test_ladder_plan_shows_memory_and_what_does_not_fit():
    text = format_plan(make_plan(compose_config(["ladder=paper", "train.gpu_memory_gb=40"])))
    assert "GB/GPU" in text and "no fit" in text
    assert "rung 1B-1xC on 8 GPUs needs" in text and "train.gpu_memory_gb=40" in text


def test_a_sweep_refuses_a_rung_that_cannot_fit_before_launching(tmp_path, capsys):
    from ladder import cli

    root = tmp_path / "runs"
    code = cli.main(["sweep", "ladder=paper", "device=cuda", "train.gpu_memory_gb=20", f"ladder.sweep_root={root}"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "needs" in error and "train.gpu_memory_gb=20" in error and len(error.splitlines()) == 1
    assert not root.exists()
