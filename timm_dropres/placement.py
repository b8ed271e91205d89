"""Where the residual-branch dropout goes, per timm block class: data, not if-chains.

Each entry names, for every `branch_drop_pos`, the submodule of the block whose *output* is dropped
('' is the block itself). `insertion.drop_output_of` turns a name into a module change. A new block
family is one entry in `BLOCK_SLOTS`.

Post-activation blocks (timm resnet.py) end their branch conv -> BN, so no point is both after the
last BN and before the last conv; the guideline slot is after the BN + act (+ anti-alias blur) that
precede the last conv: `aa` is the last module before conv3 (Bottleneck) / conv2 (BasicBlock).
Pre-activation blocks (timm resnetv2.py) are the paper's own setting: norm3 -> [dropout] -> conv3.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Dict, Iterator, Tuple, Type

import torch
import torch.nn as nn
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


@dataclass(frozen=True)
class BranchSlots:
    """The submodule whose output each branch position drops, in one block class."""

    guideline: str  # after the last norm (+ act) before the branch's last conv
    branch_end: str  # the branch's last module before the addition
    after_add: str  # the activation after the addition ('' = the block output)
    before_norm: str  # the conv feeding the branch's last norm

    def path(self, position: str) -> str:
        return getattr(self, position)


BLOCK_SLOTS: Dict[Type[nn.Module], BranchSlots] = {
    # conv1 bn1 drop_block act1 aa | conv2 bn2 se drop_path (+) act2
    BasicBlock: BranchSlots(guideline='aa', branch_end='drop_path', after_add='act2', before_norm='conv2'),
    # conv1 bn1 act1 conv2 bn2 drop_block act2 aa | conv3 bn3 se drop_path (+) act3
    Bottleneck: BranchSlots(guideline='aa', branch_end='drop_path', after_add='act3', before_norm='conv3'),
    # norm1 conv1 norm2 | conv2 drop_path (+)
    PreActBasic: BranchSlots(guideline='norm2', branch_end='drop_path', after_add='', before_norm='conv1'),
    # norm1 conv1 norm2 conv2 norm3 | conv3 drop_path (+)
    PreActBottleneck: BranchSlots(guideline='norm3', branch_end='drop_path', after_add='', before_norm='conv2'),
    # regnet: conv1 conv2(conv bn drop_block act) se | conv3(conv bn) drop_path (+) act3
    RegNetBottleneck: BranchSlots(guideline='se', branch_end='drop_path', after_add='act3', before_norm='conv3.conv'),
    # regnetv: norm1 conv1 norm2 conv2 se norm3 | conv3 drop_path (+)
    RegNetPreBottleneck: BranchSlots(guideline='norm3', branch_end='drop_path', after_add='', before_norm='se'),
    # conv1 bn1 act1 conv2(split-attention conv bn act) avd_last | conv3 bn3 (+) act3; timm's drop_path acts on
    # the block input (shortcut), so the branch ends at bn3
    ResNestBottleneck: BranchSlots(guideline='avd_last', branch_end='bn3', after_add='act3', before_norm='conv3'),
    # conv1(selective kernel: conv bn act per path) | conv2(conv bn) se drop_path (+) act
    SelectiveKernelBasic: BranchSlots(
        guideline='conv1', branch_end='drop_path', after_add='act', before_norm='conv2.conv'),
    # conv1(conv bn act) conv2(selective kernel) | conv3(conv bn) se drop_path (+) act
    SelectiveKernelBottleneck: BranchSlots(
        guideline='conv2', branch_end='drop_path', after_add='act', before_norm='conv3.conv'),
    # byobnet: conv1_kxk(conv bn act) attn | conv2_kxk(conv bn) attn_last drop_path (+) act
    ByobBasicBlock: BranchSlots(
        guideline='attn', branch_end='drop_path', after_add='act', before_norm='conv2_kxk.conv'),
    # conv1_1x1 conv2_kxk conv2b_kxk attn | conv3_1x1(conv bn) attn_last drop_path (+) act
    ByobBottleneckBlock: BranchSlots(
        guideline='attn', branch_end='drop_path', after_add='act', before_norm='conv3_1x1.conv'),
    # conv1_1x1(conv bn act) attn | conv2_kxk(conv bn) attn_last drop_path (+) act
    DarkBlock: BranchSlots(guideline='attn', branch_end='drop_path', after_add='act', before_norm='conv2_kxk.conv'),
    # conv1_kxk(conv bn act) attn | conv2_1x1(conv bn) attn_last drop_path (+) act
    EdgeBlock: BranchSlots(guideline='attn', branch_end='drop_path', after_add='act', before_norm='conv2_1x1.conv'),
}

# Two blocks have a slot only in newer timm (1.0.31): before, Bottle2neck had no module between its concat and
# conv3 (and ignored drop_block/drop_path), and DualPathBlock returned a (residual, dense) tuple, so no module
# output is its branch end or its post-add output. Feature tests, so an older timm just lacks these families.
if 'drop_block' in inspect.signature(Bottle2neck.__init__).parameters:
    # conv1 bn1 relu (conv bn relu per scale) cat drop_block | conv3 bn3 se drop_path (+) relu;
    # `relu` is shared by the branch and the post-add act, so after_add drops the block output
    BLOCK_SLOTS[Bottle2neck] = BranchSlots(
        guideline='drop_block', branch_end='drop_path', after_add='', before_norm='conv3')
if inspect.signature(DualPathBlock.forward).return_annotation is torch.Tensor:
    # pre-activation: c1x1_a(bn act conv) c3x3_b(bn act conv) c1x1_c(bn act | conv) -> residual (+), dense (cat);
    # c1x1_c's conv feeds both paths. The *b models (dpn48b, dpn68b) end in two convs c1x1_c1/c1x1_c2 instead,
    # so they have no 'c1x1_c.conv' and 'branch_end' is refused there
    BLOCK_SLOTS[DualPathBlock] = BranchSlots(
        guideline='c1x1_c.bn', branch_end='c1x1_c.conv', after_add='', before_norm='c3x3_b.conv')


def slots_for(block: nn.Module) -> BranchSlots | None:
    """The slots of `block`'s class, or None if it is not a supported residual block.

    Exact class match: a subclass may reorder its forward, so it needs its own entry. A class that
    timm_dropres generated (to drop a block's output) counts as its base class.
    """
    cls = type(block)
    return BLOCK_SLOTS.get(getattr(cls, 'dropres_base', cls))


def residual_blocks(model: nn.Module) -> Iterator[Tuple[str, nn.Module, BranchSlots]]:
    """Every supported residual block of `model` with its qualified name and slots."""
    for name, module in model.named_modules():
        slots = slots_for(module)
        if slots is not None:
            yield name, module, slots
