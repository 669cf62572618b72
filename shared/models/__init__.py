"""Model adapters: River and Vowpal Wabbit behind one narrow per-record interface."""

from shared.models.catalogue import ModelAdapter, build_model

__all__ = ["ModelAdapter", "build_model"]
