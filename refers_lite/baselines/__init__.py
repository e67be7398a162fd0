"""Baselines the paper compares REFERS with, pre-trained on the same source domain."""
from .lsp import pretrain_lsp  # noqa: F401
from .moco import pretrain_moco  # noqa: F401
