"""Shared fixtures: the smallest timm model that uses each supported block class."""
from __future__ import annotations

import pytest
import torch
from timm.models.resnet import BasicBlock, Bottleneck
from timm.models.resnetv2 import PreActBasic, PreActBottleneck

import timm_dropres  # noqa: F401  (registers the *_dropres variants)

BLOCK_EXAMPLES = {
    BasicBlock: 'resnet10t',
    Bottleneck: 'resnet14t',
    PreActBasic: 'resnetv2_18',
    PreActBottleneck: 'resnetv2_50',
}
"""block class -> the smallest registered base model built from it (the core tests cover each)."""


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
