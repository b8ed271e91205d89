"""Where the dropout acts, checked by behaviour: hooks record which tensor is dropped and where it goes.

The oracle below is written from timm's block forwards, independently of placement.BLOCK_SLOTS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, Bottleneck
from timm.models.resnetv2 import PreActBasic, PreActBottleneck

import timm_dropres
from timm_dropres.placement import residual_blocks

from conftest import BLOCK_EXAMPLES


@dataclass(frozen=True)
class BlockOracle:
    last_norm_out: Tuple[str, str]  # (leaf module, 'in'|'out') that carries the last BN output before the last conv
    last_conv: str  # the branch's last weight layer
    last_norm: str  # the branch's last norm (post-act: after the last conv; pre-act: before it)
    norm_feeder: str  # the conv whose output enters last_norm
    branch_out: str  # the branch's last module before the addition
    post_add_act: Optional[str]  # post-activation blocks apply an act after the addition


ORACLES: Dict[type, BlockOracle] = {
    Bottleneck: BlockOracle(('bn2', 'out'), 'conv3', 'bn3', 'conv3', 'bn3', 'act3'),
    BasicBlock: BlockOracle(('bn1', 'out'), 'conv2', 'bn2', 'conv2', 'bn2', 'act2'),
    PreActBottleneck: BlockOracle(('norm3.drop', 'in'), 'conv3', 'norm3', 'conv2', 'conv3', None),
    PreActBasic: BlockOracle(('norm2.drop', 'in'), 'conv2', 'norm2', 'conv1', 'conv2', None),
}
P = 0.5


def _dropouts(module: nn.Module):
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Dropout) and m.p > 0]


def _trace_block(model: nn.Module, block: nn.Module, names) -> Dict[str, torch.Tensor]:
    """One train-mode forward; returns clones of the named tensors (in-place ops would change them)."""
    seen: Dict[str, torch.Tensor] = {}
    handles = []

    def keep(key):
        def hook(_, args, out):
            seen.setdefault(key + ':in', args[0].detach().clone())
            seen.setdefault(key + ':out', out.detach().clone())
        return hook

    for name in names:
        handles.append((block.get_submodule(name) if name else block).register_forward_hook(keep(name)))
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32))
    for h in handles:
        h.remove()
    return seen


def _first_block(model: nn.Module, block_cls: type) -> nn.Module:
    return next(b for _, b, _ in residual_blocks(model) if isinstance(b, block_cls))


@pytest.mark.parametrize('block_cls', list(BLOCK_EXAMPLES), ids=lambda c: c.__name__)
@pytest.mark.parametrize('position', timm_dropres.BRANCH_DROP_POSITIONS)
def test_one_dropout_per_block_at_every_position(block_cls, position):
    model = timm.create_model(
        BLOCK_EXAMPLES[block_cls] + '_dropres', num_classes=4, branch_drop_rate=P, branch_drop_pos=position)
    blocks = list(residual_blocks(model))
    assert blocks and all(len(_dropouts(b)) == 1 for _, b, _ in blocks)
    assert len(_dropouts(model)) == len(blocks) + 1  # + the pre-pool head dropout


@pytest.mark.parametrize('block_cls', [c for c in BLOCK_EXAMPLES if c in ORACLES], ids=lambda c: c.__name__)
@pytest.mark.parametrize('position', timm_dropres.BRANCH_DROP_POSITIONS)
def test_dropout_acts_on_the_intended_tensor(block_cls, position):
    oracle = ORACLES[block_cls]
    model = timm.create_model(  # zero_init_last=False: a zero-initialised branch would hide the dropout
        BLOCK_EXAMPLES[block_cls] + '_dropres', num_classes=4, branch_drop_rate=P, branch_drop_pos=position,
        zero_init_last=False)
    block = _first_block(model, block_cls)
    (drop_name, _), = _dropouts(block)
    norm_leaf, norm_side = oracle.last_norm_out
    names = {drop_name, norm_leaf, oracle.last_conv, oracle.last_norm, oracle.norm_feeder, oracle.branch_out, ''}
    if block.downsample is not None:
        names.add('downsample')
    if oracle.post_add_act:
        names.add(oracle.post_add_act)
    t = _trace_block(model, block, names)
    dropped_in, dropped_out = t[drop_name + ':in'], t[drop_name + ':out']

    # it is an element-wise dropout with rate P: zeros appear where the input was not zero
    kept = dropped_out != 0
    assert torch.allclose(dropped_out[kept], dropped_in[kept] / (1 - P))
    new_zeros = ((dropped_out == 0) & (dropped_in != 0)).float().sum() / (dropped_in != 0).float().sum()
    assert abs(new_zeros.item() - P) < 0.05

    if position == 'guideline':  # relu(last BN before the last conv) -> [D] -> last conv
        assert torch.equal(dropped_in, F.relu(t[f'{norm_leaf}:{norm_side}']))
        assert torch.equal(dropped_out, t[oracle.last_conv + ':in'])
    elif position == 'before_norm':  # conv -> [D] -> the branch's last norm
        conv = block.get_submodule(oracle.norm_feeder)  # its hook sees the dropped output: recompute the conv
        assert torch.equal(dropped_in, nn.Conv2d.forward(conv, t[oracle.norm_feeder + ':in']))
        assert torch.equal(dropped_out, t[oracle.last_norm + ':in'])
    else:
        shortcut = t['downsample:out'] if block.downsample is not None else t[':in']
        added = t[oracle.branch_out + ':out'] + shortcut
        act = F.relu if oracle.post_add_act else (lambda x: x)
        if position == 'branch_end':  # branch -> [D] -> (+)
            assert torch.equal(dropped_in, t[oracle.branch_out + ':out'])
            assert torch.allclose(t[':out'], act(dropped_out + shortcut), atol=1e-6)
        else:  # after_add: (+) -> act -> [D] is the block output
            assert torch.allclose(dropped_in, act(added), atol=1e-6)
            assert torch.equal(dropped_out, t[':out'])


def test_oracle_covers_every_supported_block():
    assert set(ORACLES) <= set(timm_dropres.BLOCK_SLOTS)
    assert set(BLOCK_EXAMPLES) == set(timm_dropres.BLOCK_SLOTS)


def _pooled_features(head_drop_pos: str) -> torch.Tensor:
    model = timm.create_model('resnet10t_dropres', num_classes=4, drop_rate=P, head_drop_pos=head_drop_pos)
    model.train()
    features = torch.ones(2000, model.num_features, 8, 8)
    with torch.no_grad():
        return model.forward_head(features, pre_logits=True)


def test_head_dropout_acts_before_the_pool():
    # constant features: dropout after the pool leaves 0 or 1/(1-p); before it, the pool averages
    # 64 masks, so values spread around 1 with variance p / (1 - p) / 64
    pre, post = _pooled_features('pre_pool'), _pooled_features('post_pool')
    assert set(post.unique().tolist()) == {0.0, 1 / (1 - P)}
    assert len(pre.unique()) > 10
    assert pre.mean().item() == pytest.approx(1.0, abs=0.01)
    assert pre.var().item() == pytest.approx(P / (1 - P) / 64, rel=0.1)
    assert post.var().item() == pytest.approx(1.0, rel=0.1)


def test_head_dropout_is_visible_in_print_and_inactive_in_eval():
    model = timm.create_model('resnet10t_dropres', num_classes=4)
    assert '(pre_pool_drop): Dropout(p=0.2' in repr(model)
    assert model.drop_rate == 0  # timm's hidden post-pool F.dropout is off
    model.eval()
    features = torch.randn(3, model.num_features, 4, 4)
    assert torch.equal(model.forward_head(features), model.fc(features.mean((2, 3))))


def test_drop_path_and_drop_block_compose_with_the_branch_dropout():
    model = timm.create_model(
        'resnet14t_dropres', num_classes=4, drop_path_rate=0.1, drop_block_rate=0.1, branch_drop_pos='branch_end')
    block = model.layer4[0]
    assert type(block.drop_block).__name__ == 'DropBlock2d'  # timm's DropBlock stays in its slot
    assert [type(m).__name__ for m in block.drop_path] == ['DropPath', 'Dropout']
    assert all(len(_dropouts(b)) == 1 for _, b, _ in residual_blocks(model))


def test_zero_rates_add_no_module():
    model = timm.create_model('resnet10t_dropres', num_classes=4, branch_drop_rate=0, drop_rate=0)
    base = timm.create_model('resnet10t', num_classes=4)
    assert repr(model) == repr(base)
    assert type(model) is type(base)
