"""The cached-context forward (Decoder.forward_context / forward_continuation) gives the logits
of the plain forward, leaves its cache as it was, and works with the blocks wrapped."""

from __future__ import annotations

import copy

import pytest
import torch
from single_process_group import single_process_group
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.fsdp import fully_shard

from ladder.data import load_tokenizer
from ladder.model import Decoder
from ladder.sizes import get_shape
from ladder.tasks.prefix import shared_context_logprobs

CONTEXTS = [[5, 6, 7, 8, 9, 10, 11], [20, 21], [30, 31, 32, 33]]
# (context row, continuation tokens): several per context, of different lengths, one empty.
CONTINUATIONS = [(0, [1, 2, 3]), (0, [4]), (1, [40, 41, 42, 43, 44]), (2, []), (2, [50, 51]), (1, [60])]


def cached_forward(model: Decoder) -> list[torch.Tensor]:
    """For each continuation, from the cached forward: the logits at its context's last token and
    at each of its tokens."""
    width = max(map(len, CONTEXTS))
    idx = torch.zeros(len(CONTEXTS), width, dtype=torch.long)
    for row, context in enumerate(CONTEXTS):
        idx[row, width - len(context) :] = torch.tensor(context)
    next_logits, cache = model.forward_context(idx, torch.tensor([len(c) for c in CONTEXTS]))
    tail_width = max(len(tokens) for _, tokens in CONTINUATIONS)
    tail = torch.zeros(len(CONTINUATIONS), tail_width, dtype=torch.long)
    for row, (_, tokens) in enumerate(CONTINUATIONS):
        tail[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    rows = torch.tensor([context for context, _ in CONTINUATIONS])
    lengths = torch.tensor([len(tokens) for _, tokens in CONTINUATIONS])
    tail_logits = model.forward_continuation(cache, rows, tail, lengths)
    return [
        torch.cat([next_logits[context][None], tail_logits[row, : len(tokens)]])
        for row, (context, tokens) in enumerate(CONTINUATIONS)
    ]


def plain_forward(model: Decoder) -> list[torch.Tensor]:
    """The same logits from the plain forward of each context + continuation."""
    return [
        model(torch.tensor([CONTEXTS[context] + tokens]))[0, len(CONTEXTS[context]) - 1 :]
        for context, tokens in CONTINUATIONS
    ]


@pytest.mark.parametrize("norm_placement, qk_norm", [("post", True), ("pre", False)])
def test_cached_forward_equals_the_plain_forward(norm_placement, qk_norm):
    torch.manual_seed(0)
    model = Decoder(get_shape("femto", seq_len=16), norm_placement=norm_placement, qk_norm=qk_norm, init_std=0.1)
    with torch.no_grad():
        cached, plain = cached_forward(model), plain_forward(model)
    for got, expected in zip(cached, plain):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_logits_at_picks_positions_and_the_cache_is_only_read():
    torch.manual_seed(0)
    model = Decoder(get_shape("femto", seq_len=16))
    idx = torch.tensor([[0, 0, 3, 4, 5], [6, 7, 8, 9, 10]])
    with torch.no_grad():
        next_logits, cache = model.forward_context(idx, torch.tensor([3, 5]))
        keys = [layer.keys.clone() for layer in cache.layers]
        tail, rows, lengths = torch.tensor([[11, 12], [13, 0]]), torch.tensor([1, 0]), torch.tensor([2, 1])
        everything = model.forward_continuation(cache, rows, tail, lengths)
        at = (torch.tensor([0, 1]), torch.tensor([1, 0]))
        picked = model.forward_continuation(cache, rows, tail, lengths, logits_at=at)
    assert next_logits.shape == (2, 256) and everything.shape == (2, 2, 256) and picked.shape == (2, 256)
    torch.testing.assert_close(picked, torch.stack([everything[0, 1], everything[1, 0]]))
    assert all(torch.equal(layer.keys, before) for layer, before in zip(cache.layers, keys))


def test_cached_forward_goes_through_wrapped_blocks():
    """The blocks are called as modules: an activation-checkpoint wrapper (or FSDP's hooks) sees every call."""
    torch.manual_seed(0)
    model = Decoder(get_shape("femto", seq_len=16), init_std=0.1)
    with torch.no_grad():
        expected = cached_forward(model)
    calls = []
    for index, block in enumerate(model.blocks):
        model.blocks[index] = checkpoint_wrapper(block)
        model.blocks[index].register_forward_pre_hook(lambda module, args: calls.append(module))
    with torch.no_grad():
        cached = cached_forward(model)
    assert len(calls) == 2 * len(model.blocks)  # the context pass and the continuation pass
    for got, want in zip(cached, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.slow
def test_cached_forward_compiles_per_block_without_graph_breaks():
    """Blocks compiled one by one (aot_eager, fullgraph: a graph break would raise) take the real
    RoPE form, which agrees with the complex one to float rounding."""
    torch.manual_seed(0)
    model = Decoder(get_shape("femto", seq_len=16), init_std=0.1)
    with torch.no_grad():
        expected = cached_forward(model)
        for block in model.blocks:
            block.compile(backend="aot_eager", fullgraph=True)
        cached = cached_forward(model)
    for got, want in zip(cached, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:DTensor random operators")
def test_shared_context_scoring_runs_under_fsdp2():
    """With fully_shard on every block and the root, parameters outside a forward are sharded
    DTensors (calling `model.embed` directly fails): the scorer works only through the model's forward."""
    torch.manual_seed(0)
    model = Decoder(get_shape("femto", seq_len=48), init_std=0.3).eval()
    byte = load_tokenizer("byte")
    questions = [
        (byte.encode("Question: why?\nAnswer:"), [byte.encode(c) for c in (" because", " no", "x")]),
        (byte.encode("Hi"), [byte.encode(c) for c in (" there", " y")]),
    ]
    with torch.no_grad():
        expected = shared_context_logprobs(model, questions, seq_len=48, device="cpu", batch_size=8)
    with single_process_group():
        sharded = copy.deepcopy(model)
        for block in sharded.blocks:
            fully_shard(block)
        fully_shard(sharded)
        with torch.no_grad():
            got = shared_context_logprobs(sharded, questions, seq_len=48, device="cpu", batch_size=8)
    for values, want in zip(got, expected):
        assert values.tolist() == want.tolist()
