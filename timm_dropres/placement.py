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

from dataclasses import dataclass
from typing import Dict, Iterator, Tuple, Type

import torch.nn as nn
from timm.models.resnet import BasicBlock, Bottleneck
from timm.models.resnetv2 import PreActBasic, PreActBottleneck


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
}


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
