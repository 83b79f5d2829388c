"""Weight initialisation: a Decoder built on the meta device, materialised with to_empty and
initialised with init_weights equals one built eagerly with the same seed."""

from __future__ import annotations

import pytest
import torch
from single_process_group import single_process_group
from torch.distributed.fsdp import fully_shard

from ladder.model import Decoder
from ladder.sizes import get_shape


def meta_built(shape, seed: int, **options) -> Decoder:
    with torch.device("meta"):
        model = Decoder(shape, **options)
    assert model.embed.weight.is_meta and model.rope.is_meta
    model.to_empty(device="cpu")
    torch.manual_seed(seed)
    model.init_weights()
    return model


@pytest.mark.parametrize("options", [{}, {"norm_placement": "pre", "qk_norm": False, "init_std": 0.05}])
def test_meta_construction_then_init_weights_equals_eager_construction(options):
    shape = get_shape("tiny")
    torch.manual_seed(3)
    eager = Decoder(shape, **options)
    model = meta_built(shape, 3, **options)
    assert eager.state_dict().keys() == model.state_dict().keys()
    for name, tensor in eager.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    # The RoPE tables are recomputed on materialisation, in their own precision.
    assert torch.equal(model.rope, eager.rope) and torch.equal(model.rope_real, eager.rope_real)
    assert (model.rope.dtype, model.rope_real.dtype) == (torch.complex64, torch.float32)
    idx = torch.randint(0, 256, (2, 24))
    assert torch.equal(model(idx), eager(idx))


def test_building_on_meta_draws_no_random_numbers():
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    with torch.device("meta"):
        Decoder(get_shape("tiny"))
    assert torch.equal(torch.rand(4), expected)


def test_rope_tables_keep_their_precision_through_casts():
    model = Decoder(get_shape("femto"))
    for cast in (torch.float64, torch.bfloat16, torch.float32):
        model = model.to(cast)
        assert (model.rope.dtype, model.rope_real.dtype) == (torch.complex64, torch.float32)
        assert model.embed.weight.dtype == cast
    assert torch.equal(model.rope, Decoder(get_shape("femto")).rope)


@pytest.mark.filterwarnings("ignore:DTensor random operators")
def test_meta_construction_under_fsdp2():
    """The FSDP2 order: build on meta, fully_shard, to_empty, init_weights (one process, gloo)."""
    with single_process_group():
        shape = get_shape("femto")
        torch.manual_seed(0)
        eager = Decoder(shape)
        with torch.device("meta"):
            model = Decoder(shape)
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        model.to_empty(device="cpu")
        torch.manual_seed(0)
        model.init_weights()
        for name, tensor in eager.state_dict().items():
            assert torch.equal(model.state_dict()[name].full_tensor(), tensor), name
        idx = torch.randint(0, 256, (2, 16))
        assert torch.equal(model(idx), eager(idx))
