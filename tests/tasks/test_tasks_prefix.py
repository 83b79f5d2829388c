"""The shared-context path gives the log-probabilities of the Decoder's own forward pass."""

from __future__ import annotations

import pytest
import torch

from ladder.data import load_tokenizer
from ladder.model import Decoder
from ladder.sizes import get_shape
from ladder.tasks import Question, Task, evaluate
from ladder.tasks.prefix import shared_context_logprobs
from ladder.tasks.scoring import continuation_logprobs

BYTE = load_tokenizer("byte")


@pytest.mark.parametrize("norm_placement, qk_norm", [("post", True), ("pre", False)])
def test_shared_context_matches_the_full_forward_pass(norm_placement, qk_norm):
    torch.manual_seed(0)
    model = Decoder(get_shape("femto", seq_len=48), norm_placement=norm_placement, qk_norm=qk_norm, init_std=0.3).eval()
    questions = [
        (
            BYTE.encode("Question: why?\nAnswer:"),
            [BYTE.encode(c) for c in (" because", " no", " x", " it rains a lot")],
        ),
        (BYTE.encode("Hi"), [BYTE.encode(c) for c in (" there", " y")]),
        (BYTE.encode("A" * 30), [BYTE.encode(c) for c in (" bb", " ccc")]),
    ]
    with torch.no_grad():
        shared = shared_context_logprobs(model, questions, seq_len=48, device="cpu", batch_size=4)
        for (context, choices), values in zip(questions, shared):
            # Both paths cut the context to leave room for the longest choice, so they must agree.
            room = 48 - (max(map(len, choices)) - 1)
            pairs = [(context[-room:], choice) for choice in choices]
            expected = continuation_logprobs(model, pairs, seq_len=48, batch_size=3)
            assert values == pytest.approx(expected, abs=1e-4)


def test_evaluate_uses_the_shared_path_for_decoders_and_agrees_with_the_generic_path():
    torch.manual_seed(1)
    model = Decoder(get_shape("femto"), init_std=0.3)
    questions = [
        Question(f"Question {i}: what comes next?\nAnswer:", (" one", " two", " three", " four"), i % 4, str(i))
        for i in range(10)
    ]
    task = Task("t", questions)
    fast = evaluate(model, BYTE, [task], batch_size=8)["t"]
    generic = evaluate(torch.nn.Sequential(model), BYTE, [task], batch_size=8, seq_len=model.seq_len)["t"]
    assert fast.loss == pytest.approx(generic.loss, rel=1e-5)
    assert fast.soft == pytest.approx(generic.soft, rel=1e-5)
    assert (fast.acc, fast.acc_raw) == (generic.acc, generic.acc_raw)
