"""Shared fixtures: the smallest timm model that uses each supported block class."""
from __future__ import annotations

import pytest
import torch
from timm.models.byobnet import BasicBlock as ByobBasicBlock
from timm.models.byobnet import BottleneckBlock as ByobBottleneckBlock
from timm.models.byobnet import DarkBlock, EdgeBlock
from timm.models.dpn import DualPathBlock
from timm.models.regnet import Bottleneck as RegNetBottleneck
from timm.models.regnet import PreBottleneck as RegNetPreBottleneck
from timm.models.res2net import Bottle2neck
from timm.models.resnest import ResNestBottleneck
from timm.models.resnet import BasicBlock, Bottleneck
from timm.models.resnetv2 import PreActBasic, PreActBottleneck
from timm.models.sknet import SelectiveKernelBasic, SelectiveKernelBottleneck

import timm_dropres  # noqa: F401  (registers the *_dropres variants)
from timm_dropres import BLOCK_SLOTS

BLOCK_EXAMPLES = {
    BasicBlock: 'resnet10t',
    Bottleneck: 'resnet14t',
    PreActBasic: 'resnetv2_18',
    PreActBottleneck: 'resnetv2_50',
    RegNetBottleneck: 'regnetx_002',
    RegNetPreBottleneck: 'regnetv_040',
    ResNestBottleneck: 'resnest14d',
    SelectiveKernelBasic: 'skresnet18',
    SelectiveKernelBottleneck: 'skresnet50',
    ByobBasicBlock: 'test_byobnet',
    ByobBottleneckBlock: 'test_byobnet',
    DarkBlock: 'test_byobnet',
    EdgeBlock: 'test_byobnet',
    # supported only where timm's block has the slots (timm >= 1.0.31, see placement.py)
    **({Bottle2neck: 'res2net50_48w_2s'} if Bottle2neck in BLOCK_SLOTS else {}),
    **({DualPathBlock: 'dpn68'} if DualPathBlock in BLOCK_SLOTS else {}),
}
"""block class -> the smallest registered base model built from it (the core tests cover each)."""


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
