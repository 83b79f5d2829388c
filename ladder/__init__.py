"""ladder: predict a big model's task accuracy from a ladder of small ones (Bhagia et al., 2024)."""

__version__ = "0.1.0"
