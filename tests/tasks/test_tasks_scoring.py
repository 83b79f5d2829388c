"""The metrics, exactly: uniform models, a hand-computed example, an oracle, batching invariance."""

from __future__ import annotations

import math

import pytest
import torch
from task_models import FixedDistributionModel, OracleModel, UniformModel

from ladder.data import load_tokenizer
from ladder.errors import LadderError
from ladder.tasks import Question, Task, evaluate

BYTE = load_tokenizer("byte")


def _task(questions, **kwargs) -> Task:
    return Task("t", list(questions), **kwargs)


def test_uniform_model_gives_eight_bits_per_byte_with_the_byte_tokenizer():
    # Answers without a leading space: every byte of the answer costs log2(256) = 8 bits.
    task = _task(
        [
            Question("Answer: ", ("Paris", "Rome"), 0, "a"),
            Question("The capital of Japan is ", ("Kyoto", "Tōkyō", "Osaka"), 1, "b"),
        ]
    )
    score = evaluate(UniformModel(256), BYTE, [task])["t"]
    assert score.loss == pytest.approx(8.0, rel=1e-12)
    assert score.n_questions == 2 and score.chance == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_uniform_model_with_a_leading_space_counts_the_space_token_but_not_its_byte():
    # The paper's definition: -sum ln p over all continuation tokens / bytes without the leading space.
    task = _task([Question("Q:", (" yes", " no"), 0, "a")])
    score = evaluate(UniformModel(256), BYTE, [task])["t"]
    assert score.loss == pytest.approx(8.0 * 4 / 3, rel=1e-12)


def test_uniform_model_with_bpe_gives_tokens_times_log2_vocab_over_bytes(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    raw.train_from_iterator(["the cat sat on the mat, the dog sat on the log"] * 50, trainer)
    raw.save(str(tmp_path / "tokenizer.json"))
    bpe = load_tokenizer(str(tmp_path / "tokenizer.json"))
    answers = [" the mat", " a log of dogs"]
    task = _task([Question("Where did the cat sit?", tuple(answers), gold, str(gold)) for gold in (0, 1)])
    score = evaluate(UniformModel(bpe.vocab_size), bpe, [task])["t"]
    expected = [len(bpe.encode(a)) * math.log2(bpe.vocab_size) / len(a[1:].encode()) for a in answers]
    assert len(bpe.encode(answers[0])) < len(answers[0])  # BPE merged something
    assert score.loss == pytest.approx(sum(expected) / 2, rel=1e-9)


def _hand_model() -> FixedDistributionModel:
    # p('a') = 1/2, p('b') = 1/4, p(' ') = 1/8, the last 1/8 spread over the other 253 bytes.
    probabilities = torch.full((256,), 0.125 / 253, dtype=torch.float64)
    probabilities[ord("a")], probabilities[ord("b")], probabilities[ord(" ")] = 0.5, 0.25, 0.125
    return FixedDistributionModel(probabilities)


def test_hand_computed_two_question_example():
    # Q1: " a" (ln p = -ln 16) vs " bb" (-ln 128); gold " a": right by both rules; 4 bits / 1 byte.
    # Q2: " aab" (-ln 128, per char -ln128/4) vs " b" (-ln 32, per char -ln32/2); gold " aab":
    #     summed log-prob picks " b" (wrong), per-character picks " aab" (right); 7 bits / 3 bytes.
    questions = [Question("Q:", (" a", " bb"), 0, "1"), Question("Q:", (" aab", " b"), 0, "2")]
    score = evaluate(_hand_model(), BYTE, [_task(questions)])["t"]
    ln2 = math.log(2)
    assert score.loss == pytest.approx((4.0 + 7.0 / 3.0) / 2, rel=1e-9)
    assert score.acc_raw == 0.5
    assert score.acc_len_norm == 1.0
    assert score.acc == 1.0  # len_norm is the primary metric by default
    # Soft metrics normalise the per-character log-likelihoods over the choices.
    soft_1 = 1 / (1 + math.exp(-(7 / 3) * ln2 + 2 * ln2))
    soft_2 = 1 / (1 + math.exp(-(5 / 2) * ln2 + (7 / 4) * ln2))
    assert score.soft == pytest.approx((soft_1 + soft_2) / 2, rel=1e-9)
    assert score.soft_log == pytest.approx((math.log(soft_1) + math.log(soft_2)) / 2, rel=1e-9)


def test_acc_primary_metric_reports_summed_log_prob_accuracy_and_raw_soft():
    questions = [Question("Q:", (" a", " bb"), 0, "1"), Question("Q:", (" aab", " b"), 0, "2")]
    score = evaluate(_hand_model(), BYTE, [_task(questions, primary_metric="acc")])["t"]
    assert score.acc == 0.5 and score.acc_len_norm == 1.0
    soft_1 = 1 / (1 + 2.0**-3)  # ll: -4 ln2 vs -7 ln2
    soft_2 = 1 / (1 + 2.0**2)  # ll: -7 ln2 vs -5 ln2
    assert score.soft == pytest.approx((soft_1 + soft_2) / 2, rel=1e-9)


def test_group_weights_give_the_weighted_mean_of_group_means():
    questions = [
        Question("Q:", (" a", " bb"), 0, "1", group="x"),  # 4 bits per byte
        Question("Q:", (" aab", " b"), 0, "2", group="y"),  # 7/3
        Question("Q:", (" aab", " b"), 0, "3", group="y"),  # 7/3
    ]
    task = _task(questions, group_weights={"x": 0.25, "y": 0.75, "absent": 0.5})
    score = evaluate(_hand_model(), BYTE, [task])["t"]
    assert score.loss == pytest.approx(0.25 * 4 + 0.75 * 7 / 3, rel=1e-9)
    assert score.acc_raw == pytest.approx(0.25 * 1 + 0.75 * 0)


def _quiz() -> list[Question]:
    words = ["apple", "river", "stone", "cloud", "ember", "frost", "maple", "grove"]
    return [
        Question(
            f"Question {i}: which word is number {i}?\nAnswer:",
            tuple(" " + w for w in words[i % 4 : i % 4 + 4]),
            i % 4,
            str(i),
        )
        for i in range(12)
    ]


def test_a_model_that_knows_the_answers_scores_100_percent():
    questions = _quiz()
    known = [BYTE.encode(q.context + q.choices[q.gold]) for q in questions]
    model = OracleModel(known, 256, seq_len=128)
    score = evaluate(model, BYTE, [_task(questions)])["t"]
    assert score.acc == score.acc_raw == score.acc_len_norm == 1.0
    assert score.soft > 0.99 and score.loss < 0.01


def test_results_do_not_depend_on_batch_size_or_task_grouping_and_pairs_are_scored_once():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(256, 16), torch.nn.Linear(16, 256))
    model.seq_len = 32
    model.train()
    first = _task(_quiz())
    second = Task("copy", list(_quiz()))
    one = evaluate(model, BYTE, [first], batch_size=1)["t"]
    both = evaluate(model, BYTE, [first, second], batch_size=5)
    assert model.training  # restored after evaluation
    for name in ("loss", "acc", "acc_raw", "soft", "soft_log"):
        assert getattr(both["t"], name) == pytest.approx(getattr(one, name), rel=1e-6)
        assert getattr(both["copy"], name) == pytest.approx(getattr(one, name), rel=1e-6)
    counting = UniformModel(256, seq_len=256)
    evaluate(counting, BYTE, [first, second], batch_size=8)
    distinct_pairs = len({pair for q in _quiz() for pair in q.pairs()})
    assert counting.calls == math.ceil(distinct_pairs / 8)


def test_long_contexts_are_cut_from_the_left_to_the_model_length():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(256, 8), torch.nn.Linear(8, 256))
    long = Question("x" * 500 + "Answer:", (" yes", " no"), 1, "long")
    # Input = (context + answer)[:-1] cut to 16 tokens: 13 context bytes remain for " yes".
    short = Question(("x" * 500 + "Answer:")[-13:], (" yes",), 0, "short")
    scores = evaluate(model, BYTE, [_task([long]), Task("s", [short, short])], seq_len=16)
    assert scores["t"].soft != scores["s"].soft
    long_yes = evaluate(model, BYTE, [_task([Question(long.context, (" yes", " no"), 0, "y")])], seq_len=16)["t"]
    assert long_yes.loss == pytest.approx(scores["s"].loss, rel=1e-6)


def test_partial_scoring_uses_each_choice_context():
    # WinoGrande style: the option fills the blank in the context, the continuation is shared.
    questions = [Question("", (" ran off.", " ran off."), 1, "w", contexts=("The cat", "The dog"))]
    model = OracleModel([BYTE.encode("The dog ran off.")], 256, seq_len=64)
    score = evaluate(model, BYTE, [_task(questions)])["t"]
    assert score.acc == 1.0 and score.loss < 0.01


def test_questions_with_answers_longer_than_the_model_context_are_skipped():
    short = Question("Q:", (" a", " bb"), 0, "1")
    long = Question("Q:", (" " + "a" * 70, " b"), 0, "2")  # 71 tokens; the model sees 64
    score = evaluate(_hand_model(), BYTE, [_task([short, long])])["t"]
    assert score.n_questions == 1 and score.loss == pytest.approx(4.0)
    with pytest.raises(LadderError, match="every question has an answer longer than the model's context"):
        evaluate(UniformModel(256, seq_len=16), BYTE, [_task([long])])
