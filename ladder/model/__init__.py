"""The model: the decoder (`decoder.py`, the architecture top-down), the hand-written CPU autograd
functions it runs on CPU (`cpu_kernels.py`) and the cached context for scoring continuations of
shared contexts (`context_cache.py`)."""

from ladder.model.context_cache import CachedLayer, ContextCache
from ladder.model.decoder import (
    NORM_EPS,
    NORM_PLACEMENTS,
    Attention,
    Block,
    Decoder,
    RMSNorm,
    SwiGLU,
    apply_rope,
    decoder_from_config,
    rope_frequencies,
)

__all__ = [
    "NORM_EPS",
    "NORM_PLACEMENTS",
    "Attention",
    "Block",
    "CachedLayer",
    "ContextCache",
    "Decoder",
    "RMSNorm",
    "SwiGLU",
    "apply_rope",
    "decoder_from_config",
    "rope_frequencies",
]
