"""The paper's rules (batch, learning rate, warmup, token budget, rung names) and the rung record."""

import json
import math

import pytest

from ladder.errors import LadderError
from ladder.rungs import Rung, batch_sequences, chinchilla_tokens, make_rung, peak_lr, rung_name
from ladder.sizes import get_shape, paper_params, total_params


def test_rung_names_drop_trailing_zeros():
    assert rung_name("tiny", 1.0) == "tiny-1xC"
    assert rung_name("tiny", None, tokens=40960) == "tiny-40960tok"
    assert rung_name("190M", 0.5) == "190M-0.5xC"
    assert rung_name("1B", 10) == "1B-10xC"


def test_batch_rule_at_paper_scale():
    # 160 (N/108e6)^(2/3) / 2 sequences of 4096, rounded to a multiple of 64.
    n = 190_354_176
    assert 160 * (n / 108e6) ** (2 / 3) / 2 == pytest.approx(116.73, abs=0.01)
    assert batch_sequences(n, 4096) == 128
    assert batch_sequences(1_279_395_840, 4096) == 384
    assert batch_sequences(13_202_396_160, 4096) == 1984
    assert batch_sequences(10_000, 4096) == 64  # never below one multiple


def test_batch_rule_at_cpu_scale_keeps_tokens_and_multiples_of_8():
    n = paper_params(get_shape("tiny"))
    assert batch_sequences(n, 256) == 16  # 0.99 sequences of 4096 -> 15.8 of 256 -> 16
    assert batch_sequences(paper_params(get_shape("base")), 256) == 56
    assert batch_sequences(100, 256) == 8


def test_learning_rate_rules():
    assert peak_lr(108e6) == pytest.approx(0.0047 / 4)
    assert peak_lr(190_354_176) == pytest.approx(0.0047 * (190_354_176 / 108e6) ** (-1 / 3) / 4)
    assert peak_lr(8 * 108e6) == pytest.approx(0.0047 / 8)  # N x 8 -> LR / 2
    assert peak_lr(1e6, "kaplan") == pytest.approx(0.003239 - 0.0001395 * math.log(1e6))
    with pytest.raises(LadderError):
        peak_lr(1e6, "muP")


def test_make_rung_sizes_budget_steps_and_warmup():
    rung = make_rung("tiny", 2.0)
    n = 148_032
    assert rung.name == "tiny-2xC" and rung.n_params == n
    assert rung.batch_sequences == 16 and rung.seq_len == 256
    assert rung.steps == math.ceil(2 * 20 * n / (16 * 256))
    assert rung.tokens == rung.steps * 16 * 256 >= chinchilla_tokens(n, 2.0)
    assert rung.warmup_steps == round(n / (16 * 256))  # warm up over N tokens
    assert rung.flops == 6 * n * rung.tokens


def test_make_rung_overrides_win():
    rung = make_rung("tiny", tokens=1_000_000, name="tiny-1M", role="target", batch=32, lr=1e-3, warmup_tokens=0)
    assert (rung.name, rung.role, rung.batch_sequences, rung.peak_lr) == ("tiny-1M", "target", 32, 1e-3)
    assert rung.steps == math.ceil(1_000_000 / (32 * 256))
    assert rung.warmup_steps == 1


@pytest.mark.parametrize("multiplier", [-1.0, 0.0])
def test_non_positive_multiplier_is_refused(multiplier):
    with pytest.raises(LadderError, match="multiplier"):
        make_rung("tiny", multiplier)


def test_unknown_size_is_refused():
    with pytest.raises(LadderError, match="unknown model size"):
        make_rung("huge", 1.0)


@pytest.mark.parametrize(
    "rung",
    [
        make_rung("femto", 2.0),
        make_rung("190M", 0.5, lr=1e-3, batch=64),
        make_rung("7B", tokens=4_000_000_000_000, name="7B-4T", role="target"),
        make_rung("tiny", 1.0, vocab_size=1024, seq_len=128),
    ],
)
def test_the_record_round_trips(rung):
    record = rung.to_record()
    assert Rung.from_record(json.loads(json.dumps(record))) == rung
    assert Rung.from_record(record).to_record() == record
    assert record["total_params"] == total_params(rung.shape) and record["N"] == rung.n_params


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("N"), "'N' missing"),
        (lambda r: r.update(steps="10"), "'steps' missing or not int"),
        (lambda r: r.update(size="huge"), "unknown model size 'huge'"),
        (lambda r: r.update(d_model=17), "are not size femto's"),
        (lambda r: r.update(role="baseline"), "role must be"),
    ],
)
def test_a_bad_record_is_one_line_naming_its_source(change, message):
    record = make_rung("femto", 1.0).to_record()
    change(record)
    with pytest.raises(LadderError, match=message) as error:
        Rung.from_record(record, source="runs/x/rung.json")
    assert str(error.value).startswith("runs/x/rung.json: ") and "\n" not in str(error.value)


def test_for_vocab_sizes_the_rung_again_from_what_it_was_sized_from():
    for args, kwargs in [
        (("tiny", 1.0), {}),
        (("femto",), {"tokens": 50_000, "name": "t", "role": "target"}),
        (("mini", 2.0), {"lr": 1e-3, "warmup_tokens": 4096, "seq_len": 128}),
    ]:
        rung = make_rung(*args, **kwargs)
        assert rung.for_vocab(rung.shape.vocab_size) is rung
        assert rung.for_vocab(4096) == make_rung(*args, **kwargs, vocab_size=4096)
    assert make_rung("tiny", 1.0).for_vocab(4096).n_params > make_rung("tiny", 1.0).n_params
