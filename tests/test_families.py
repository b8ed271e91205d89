"""The rule on timm's other residual families and the head rule on CNNs without residual blocks, by behaviour.

Each block's oracle is written from timm's block forward, independently of placement.BLOCK_SLOTS: for every
position, which tensor of the *base* model (same weights, same input, no dropout) the dropout must receive,
and where the dropped tensor must go in the variant. Models are shrunk with timm's own kwargs to stay fast.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import pytest
import timm
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

import timm_dropres
from timm_dropres.placement import residual_blocks

P = 0.5
X = torch.randn(4, 3, 32, 32)
Merge = Callable[[torch.Tensor, nn.Module, Dict[str, torch.Tensor]], torch.Tensor]


def add_then(act: Optional[str], shortcut: str) -> Merge:
    """The block output from its branch output: + the shortcut (or the input if there is none), then `act`."""
    def merge(branch, block, t):
        added = branch + (t[f'{shortcut}:out'] if getattr(block, shortcut) is not None else t[':in'])
        return block.get_submodule(act)(added) if act else added
    return merge


def dual_path(branch, block, t):
    """DPN: the first num_1x1_c channels are added to the residual path, the rest join the dense path."""
    proj = next((n for n in SHORTCUTS if getattr(block, n, None) is not None), None)
    x_s = t[f'{proj}:out'] if proj else t[':in']
    c = block.num_1x1_c
    return torch.cat([x_s[:, :c] + branch[:, :c], x_s[:, c:], branch[:, c:]], dim=1)


@dataclass(frozen=True)
class Case:
    block_cls: type
    base: str
    guideline: str  # base module whose output is the last BN + act (+ SE / pool) before the last conv
    last_conv: str
    norm_feeder: str  # base module whose output enters the branch's last norm
    last_norm: str
    branch_end: str  # base module whose output ends the branch, before the addition
    merge: Merge
    # timm kwargs: shrink the model; zero_init_last=False, as a zero last BN would zero the branch the test reads
    kwargs: Dict[str, Any] = field(default_factory=lambda: dict(zero_init_last=False))
    block: str = ''  # the block to check ('' = the first of its class)


SHORTCUTS = ('downsample', 'shortcut', 'c1x1_w_s1', 'c1x1_w_s2')  # what each family calls its shortcut
SMALL_RESNET = dict(layers=(1, 1, 1, 1), zero_init_last=False)
CASES = [
    Case(RegNetBottleneck, 'regnetx_002', 'conv2', 'conv3.conv', 'conv3.conv', 'conv3.bn', 'drop_path',
         add_then('act3', 'downsample')),
    # regnety: the SE sits between conv2 and conv3, the dropout after it
    Case(RegNetBottleneck, 'regnety_002', 'se', 'conv3.conv', 'conv3.conv', 'conv3.bn', 'drop_path',
         add_then('act3', 'downsample')),
    Case(RegNetPreBottleneck, 'regnetv_040', 'norm3', 'conv3', 'se', 'norm3', 'drop_path',
         add_then(None, 'downsample'), dict(depth=13, w0=24, wa=36.44, wm=2.49, group_size=8, zero_init_last=False)),
    # resnest: split-attention conv2 -> [avg pool where the block strides] -> [D] -> conv3
    Case(ResNestBottleneck, 'resnest14d', 'conv2', 'conv3', 'conv3', 'bn3', 'bn3', add_then('act3', 'downsample'),
         block='layer1.0'),
    Case(ResNestBottleneck, 'resnest14d', 'avd_last', 'conv3', 'conv3', 'bn3', 'bn3', add_then('act3', 'downsample'),
         block='layer2.0'),
    Case(Bottle2neck, 'res2net50_48w_2s', 'drop_block', 'conv3', 'conv3', 'bn3', 'bn3',
         add_then('relu', 'downsample'), SMALL_RESNET),
    Case(SelectiveKernelBasic, 'skresnet18', 'conv1', 'conv2.conv', 'conv2.conv', 'conv2.bn', 'conv2',
         add_then('act', 'downsample'), SMALL_RESNET),
    Case(SelectiveKernelBottleneck, 'skresnet50', 'conv2', 'conv3.conv', 'conv3.conv', 'conv3.bn', 'conv3',
         add_then('act', 'downsample'), SMALL_RESNET),
    Case(ByobBasicBlock, 'test_byobnet', 'attn', 'conv2_kxk.conv', 'conv2_kxk.conv', 'conv2_kxk.bn', 'drop_path',
         add_then('act', 'shortcut')),
    Case(ByobBottleneckBlock, 'test_byobnet', 'attn', 'conv3_1x1.conv', 'conv3_1x1.conv', 'conv3_1x1.bn',
         'drop_path', add_then('act', 'shortcut')),
    Case(DarkBlock, 'test_byobnet', 'attn', 'conv2_kxk.conv', 'conv2_kxk.conv', 'conv2_kxk.bn', 'drop_path',
         add_then('act', 'shortcut')),
    Case(EdgeBlock, 'test_byobnet', 'attn', 'conv2_1x1.conv', 'conv2_1x1.conv', 'conv2_1x1.bn', 'drop_path',
         add_then('act', 'shortcut')),
    # pre-activation dual path: bn act | conv, whose output feeds both the residual and the dense path
    Case(DualPathBlock, 'dpn68', 'c1x1_c.bn', 'c1x1_c.conv', 'c3x3_b.conv', 'c1x1_c.bn', 'c1x1_c', dual_path,
         dict(k_sec=(1, 1, 1, 1))),
]
SUPPORTED_CASES = [c for c in CASES if c.block_cls in timm_dropres.BLOCK_SLOTS]  # res2net, dpn: timm >= 1.0.31


def _block(model: nn.Module, case: Case) -> nn.Module:
    block = model.get_submodule(case.block) if case.block else next(
        m for m in model.modules() if isinstance(m, case.block_cls))
    assert isinstance(block, case.block_cls)
    return block


def _dropouts(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, nn.Dropout) and m.p > 0]


def _trace(block: nn.Module, names, run: Callable[[], Any]) -> Dict[str, torch.Tensor]:
    """Clones of the first input and output of `block`'s named modules ('' = the block) during `run()`."""
    seen: Dict[str, torch.Tensor] = {}

    def keep(key):
        def hook(_, args, out):
            seen.setdefault(key + ':in', args[0].detach().clone())
            seen.setdefault(key + ':out', out.detach().clone())
        return hook

    handles = [(block.get_submodule(n) if n else block).register_forward_hook(keep(n)) for n in names]
    with torch.no_grad():
        run()
    for h in handles:
        h.remove()
    return seen


def test_every_block_class_beyond_the_core_has_a_case():
    core = {BasicBlock, Bottleneck, PreActBasic, PreActBottleneck}  # tests/test_placement.py
    assert {c.block_cls for c in SUPPORTED_CASES} == set(timm_dropres.BLOCK_SLOTS) - core


@pytest.mark.parametrize('case', SUPPORTED_CASES, ids=lambda c: f'{c.block_cls.__name__}-{c.base}')
def test_placement_and_parameter_identity_at_every_position(case):
    base = timm.create_model(case.base, num_classes=4, **case.kwargs)
    base_block = _block(base, case)
    shortcut = [n for n in SHORTCUTS if getattr(base_block, n, None) is not None]
    base_names = {'', case.guideline, case.norm_feeder, case.branch_end, *shortcut}

    for position in timm_dropres.BRANCH_DROP_POSITIONS:
        variant = timm.create_model(
            case.base + '_dropres', num_classes=4, branch_drop_rate=P, branch_drop_pos=position, **case.kwargs)
        # parameter identity: same keys and shapes, base weights load strictly, identical eval output
        assert {k: v.shape for k, v in variant.state_dict().items()} == \
            {k: v.shape for k, v in base.state_dict().items()}
        variant.load_state_dict(base.state_dict(), strict=True)
        with torch.no_grad():
            assert torch.equal(variant.eval()(X), base.eval()(X)), position

        # exactly one dropout per block, wherever it sits
        blocks = list(residual_blocks(variant))
        assert blocks and all(len(_dropouts(b)) == 1 for _, b, _ in blocks), position

        block = _block(variant, case)
        dropout, = _dropouts(block)
        dropout_name = next(n for n, m in block.named_modules() if m is dropout)
        t = _trace(block, {'', dropout_name, case.last_conv, case.last_norm}, lambda: variant.train()(X))
        dropped_in, dropped_out = t[dropout_name + ':in'], t[dropout_name + ':out']
        # the truth: the base block (train mode, no dropout) on the same block input
        t_base = _trace(base_block, base_names, lambda: base_block.train()(t[':in'].clone()))

        # element-wise, rate P
        kept = dropped_out != 0
        assert torch.allclose(dropped_out[kept], dropped_in[kept] / (1 - P))
        nonzero = dropped_in != 0
        n = nonzero.sum().item()
        assert abs(((~kept) & nonzero).sum().item() / n - P) < 4 * math.sqrt(P * (1 - P) / n), position

        if position == 'guideline':  # last BN + act (+ SE / pool) -> [D] -> the branch's last conv
            assert torch.equal(dropped_in, t_base[case.guideline + ':out'])
            assert torch.equal(dropped_out, t[case.last_conv + ':in'])
        elif position == 'before_norm':  # the module feeding the last norm -> [D] -> the last norm
            assert torch.equal(dropped_in, t_base[case.norm_feeder + ':out'])
            assert torch.equal(dropped_out, t[case.last_norm + ':in'])
        elif position == 'branch_end':  # the branch's end -> [D] -> (+)
            assert torch.equal(dropped_in, t_base[case.branch_end + ':out'])
            assert torch.allclose(t[':out'], case.merge(dropped_out, base_block, t_base), atol=1e-6)
        else:  # after_add: (+) -> act -> [D] is the block output
            assert torch.equal(dropped_in, t_base[':out'])
            assert torch.equal(dropped_out, t[':out'])


@pytest.mark.skipif(DualPathBlock not in timm_dropres.BLOCK_SLOTS, reason='DPN blocks have slots in timm >= 1.0.31')
def test_dpn_b_models_refuse_branch_end_rather_than_misplace_it():
    # dpn*b blocks end in two convs (c1x1_c1 residual, c1x1_c2 dense): there is no one branch-end module
    model = timm.create_model('dpn48b', num_classes=4, k_sec=(1, 1, 1, 1))
    before = repr(model)
    with pytest.raises(ValueError, match="branch_drop_pos='branch_end' is not available here: DualPathBlock"):
        timm_dropres.apply(model, branch_drop_rate=P, branch_drop_pos='branch_end')
    assert repr(model) == before  # refused before any change
    guided = timm_dropres.apply(copy.deepcopy(model), branch_drop_rate=P)
    assert all(len(_dropouts(b)) == 1 for _, b, _ in residual_blocks(guided))


def test_registered_families():
    variants = set(timm.list_models('*_dropres'))
    for base in ('regnetx_002', 'regnety_002', 'regnetv_040', 'resnest14d', 'skresnet18', 'skresnext50_32x4d',
                 'gernet_s', 'resnet33ts', 'resnet51q', 'resnet61q', 'seresnext26ts', 'resnet50_clip_gap'):
        assert base + '_dropres' in variants, base
    for block_cls, base in ((Bottle2neck, 'res2next50'), (DualPathBlock, 'dpn92')):
        assert (base + '_dropres' in variants) == (block_cls in timm_dropres.BLOCK_SLOTS), base
    # not batch norm (GroupNorm, EvoNorm), blocks without a shortcut (regnetz), other block types
    # (RepVGG, MobileOne) or an attention-pool head
    for base in ('regnety_040_sgn', 'regnetz_005', 'regnetz_b16', 'regnetz_b16_evos', 'repvgg_a0',
                 'mobileone_s0', 'resnet50_clip'):
        assert timm.is_model(base) and base + '_dropres' not in variants, base
    assert timm.list_pretrained('regnetx_002_dropres*') == \
        [n.replace('regnetx_002', 'regnetx_002_dropres', 1) for n in timm.list_pretrained('regnetx_002.*')]


HEAD_ONLY = ['densenet121', 'efficientnet_b0', 'mobilenetv3_small_100', 'convnext_atto']


@pytest.mark.parametrize('name', HEAD_ONLY)
def test_head_rule_alone_on_cnns_without_residual_blocks(name):
    base = timm.create_model(name, num_classes=4, drop_rate=P)  # timm's own post-pool dropout on
    pre = timm_dropres.apply(copy.deepcopy(base), branch_drop_rate=0, drop_rate=P)
    post = timm_dropres.apply(copy.deepcopy(base), branch_drop_rate=0, drop_rate=P, head_drop_pos='post_pool')
    assert pre.state_dict().keys() == base.state_dict().keys()
    assert _dropouts(pre) == [pre.pre_pool_drop]  # timm's own head dropout is off, ours is visible
    with torch.no_grad():
        assert torch.equal(pre.eval()(X), base.eval()(X))
        features = torch.rand(256, base.num_features, 4, 4) + 0.5
        expected = base.eval().forward_head(features, pre_logits=True)
        pre_out = pre.train().forward_head(features, pre_logits=True)
        post_out = post.train().forward_head(features, pre_logits=True)
    nonzero = expected != 0
    # post-pool: timm's dropout zeroes pooled features at rate P and scales the rest
    kept = post_out != 0
    assert torch.allclose(post_out[kept], expected[kept] / (1 - P), atol=1e-5)
    assert abs(((~kept) & nonzero).float().mean().item() / nonzero.float().mean().item() - P) < 0.05
    # pre-pool: the pool averages 16 masks, so (almost) no pooled feature is dropped whole, yet it is stochastic
    assert ((pre_out == 0) & nonzero).float().mean().item() / nonzero.float().mean().item() < 0.01
    assert not torch.allclose(pre_out, expected)


def test_head_rule_refuses_a_model_without_global_pool():
    vit = timm.create_model('vit_tiny_patch16_224', img_size=32, num_classes=4)
    with pytest.raises(ValueError, match="head_drop_pos='pre_pool' needs a model with forward_head and a global pool"):
        timm_dropres.apply(vit, branch_drop_rate=0, drop_rate=P)


def test_head_rule_refuses_to_stack_on_an_unknown_post_pool_dropout():
    # GhostNet is not in POST_POOL_DROPOUT (and timm builds it with drop_rate=0.2): accepted only when it
    # reports timm's own head dropout off
    with pytest.raises(ValueError, match='would stack'):
        timm_dropres.apply(timm.create_model('ghostnet_050', num_classes=4), branch_drop_rate=0)
    model = timm_dropres.apply(
        timm.create_model('ghostnet_050', num_classes=4, drop_rate=0), branch_drop_rate=0, drop_rate=P)
    assert _dropouts(model) == [model.pre_pool_drop]
