"""Parameter counts and FLOPs: the paper's numbers, and the closed forms against the torch model."""

import pytest
import torch

from ladder.errors import LadderError
from ladder.model import Decoder
from ladder.sizes import (
    CPU_PRESETS,
    PAPER_VOCAB,
    PRESETS,
    embedding_params,
    flops_per_token,
    get_shape,
    non_embedding_params,
    paper_params,
    total_params,
)

# Bhagia et al. 2024, Table 1 (N: all parameters but the input embedding, vocabulary 100,352).
PAPER_N = {
    "190M": 190_354_176,
    "370M": 371_262_464,
    "760M": 758_220_288,
    "1B": 1_279_395_840,
    "3B": 3_169_537_280,
    "7B": 6_887_575_552,
    "13B": 13_202_396_160,
}


@pytest.mark.parametrize("name", PAPER_N)
def test_paper_counts_are_exact(name):
    shape = get_shape(name)
    assert shape.vocab_size == PAPER_VOCAB
    assert paper_params(shape) == PAPER_N[name]


@pytest.mark.parametrize("name", PAPER_N)
def test_built_paper_model_has_the_counted_parameters(name):
    # On the meta device the 13B model costs no memory: only shapes are built.
    shape = get_shape(name)
    with torch.device("meta"):
        model = Decoder(shape)
    assert model.num_params() == total_params(shape)
    assert model.num_params() - model.embed.weight.numel() == PAPER_N[name]


@pytest.mark.parametrize("name", CPU_PRESETS)
def test_cpu_preset_formulas_match_the_torch_model(name):
    shape = get_shape(name)
    model = Decoder(shape)
    assert model.num_params() == total_params(shape)
    assert model.embed.weight.numel() == embedding_params(shape)
    assert model.lm_head.weight.numel() == embedding_params(shape)
    assert non_embedding_params(shape) == total_params(shape) - 2 * shape.vocab_size * shape.d_model


def test_known_counts_of_cpu_presets():
    assert paper_params(get_shape("tiny")) == 148_032
    assert 100_000 <= paper_params(get_shape("tiny")) <= 300_000  # the smoke-test size
    assert total_params(get_shape("base")) == 1_116_288  # the benchmark's ~1M model


def test_other_vocabulary_and_sequence_length():
    shape = get_shape("190M", vocab_size=50_304, seq_len=2048)
    assert (shape.vocab_size, shape.seq_len, shape.d_model) == (50_304, 2048, 768)
    assert paper_params(shape) == PAPER_N["190M"] - (PAPER_VOCAB - 50_304) * 768
    model = Decoder(get_shape("tiny", vocab_size=1000))
    assert model.num_params() == total_params(get_shape("tiny", vocab_size=1000))


def test_flops_per_token_dense_and_attention():
    shape = get_shape("190M")
    dense, with_attention = flops_per_token(shape)
    assert dense == 6 * 190_354_176
    assert with_attention == dense + 12 * 12 * 768 * 4096  # PaLM: 12 x layers x d x seq
    assert flops_per_token(shape, seq_len=2048)[1] == dense + 12 * 12 * 768 * 2048
    assert flops_per_token(get_shape("13B"))[1] == 6 * 13_202_396_160 + 12 * 40 * 5120 * 4096


def test_presets_cover_the_paper_and_cpu_sizes():
    assert set(PAPER_N) | set(CPU_PRESETS) == set(PRESETS)
    assert get_shape("7B").mlp_hidden == 11_008 and get_shape("13B").mlp_hidden == 13_824
    assert get_shape("1B").mlp_hidden == 4 * 2048


@pytest.mark.parametrize("bad", [{"name": "42M"}, {"name": "tiny", "vocab_size": 0}, {"name": "tiny", "seq_len": -1}])
def test_bad_shapes_are_refused(bad):
    with pytest.raises(LadderError):
        get_shape(**bad)


def test_vocabulary_padding_keeps_the_paper_and_byte_vocabularies():
    from ladder.sizes import BYTE_VOCAB, padded_vocab

    assert padded_vocab(PAPER_VOCAB, 128) == PAPER_VOCAB and padded_vocab(BYTE_VOCAB, 128) == BYTE_VOCAB
    assert padded_vocab(50_277, 128) == 50_304 and padded_vocab(300, 1) == 300
