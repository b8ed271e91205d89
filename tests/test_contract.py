"""timm's model contract and parameter identity on the variants, one per supported block class."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn

from timm_dropres.placement import residual_blocks

from conftest import BLOCK_EXAMPLES

BASES = sorted(set(BLOCK_EXAMPLES.values()))
X = torch.randn(2, 3, 64, 64)


def _pair(base: str, **kwargs):
    """A variant and its base model with the same (random) weights."""
    ref = timm.create_model(base, num_classes=5, **kwargs)
    variant = timm.create_model(base + '_dropres', num_classes=5, **kwargs)
    variant.load_state_dict(ref.state_dict(), strict=True)
    return variant, ref


def _n_dropouts(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


@pytest.mark.parametrize('base', BASES)
def test_same_parameters_and_identical_eval_output(base):
    variant, ref = _pair(base)
    assert {k: v.shape for k, v in variant.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    variant.eval(), ref.eval()
    with torch.no_grad():
        assert torch.equal(variant(X), ref(X))
        assert torch.equal(variant.forward_features(X), ref.forward_features(X))


@pytest.mark.parametrize('base', BASES)
def test_forward_features_head_and_reset_classifier(base):
    model = timm.create_model(base + '_dropres', num_classes=5)
    features = model.forward_features(X)
    assert features.shape == (2, model.num_features, 2, 2)  # unpooled
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(7)
    assert model(X).shape == (2, 7)
    assert isinstance(model.pre_pool_drop, nn.Dropout) and model.pre_pool_drop.p == 0.2  # survives the reset
    model.train()
    ones = torch.ones(1, model.num_features, 4, 4)
    assert not torch.equal(model.forward_head(ones, pre_logits=True), torch.ones(1, model.num_features))


@pytest.mark.parametrize('base', BASES)
def test_headless_models(base):
    model = timm.create_model(base + '_dropres', num_classes=0, global_pool='')
    assert model(X).shape == (2, model.num_features, 2, 2)
    pooled = timm.create_model(base + '_dropres', num_classes=0)
    assert pooled(X).shape == (2, pooled.num_features)


@pytest.mark.parametrize('base', BASES)
def test_features_only_keeps_branch_dropouts(base):
    model = timm.create_model(base + '_dropres', features_only=True, out_indices=(1, 2, 3, 4))
    features = model(X)
    assert [f.shape[-1] for f in features] == [16, 8, 4, 2]
    blocks = list(residual_blocks(model))
    assert blocks and _n_dropouts(model) == len(blocks)


@pytest.mark.parametrize('base', BASES)
def test_forward_intermediates(base):
    variant, ref = _pair(base)
    variant.eval(), ref.eval()
    with torch.no_grad():
        final, intermediates = variant.forward_intermediates(X)
        ref_final, ref_intermediates = ref.forward_intermediates(X)
    assert torch.equal(final, ref_final)
    assert all(torch.equal(a, b) for a, b in zip(intermediates, ref_intermediates))


@pytest.mark.parametrize('base', BASES)
def test_torchscript_matches_eager_in_train_and_eval(base):
    model = timm.create_model(base + '_dropres', num_classes=5)
    scripted = torch.jit.script(model)
    for mode in (False, True):
        model.train(mode), scripted.train(mode)
        torch.manual_seed(1)
        expected = model(X)
        torch.manual_seed(1)
        assert torch.allclose(scripted(X), expected, atol=1e-5)


@pytest.mark.parametrize('base', BASES)
def test_fx_symbolic_trace_keeps_the_dropouts(base):
    model = timm.create_model(base + '_dropres', num_classes=5).train()
    graph_module = torch.fx.symbolic_trace(model)
    dropout_calls = [n for n in graph_module.graph.nodes
                     if n.op == 'call_module' and isinstance(graph_module.get_submodule(n.target), nn.Dropout)
                     and graph_module.get_submodule(n.target).p > 0]
    assert len(dropout_calls) == _n_dropouts(model)
    torch.manual_seed(1)
    expected = model(X)
    torch.manual_seed(1)
    assert torch.allclose(graph_module(X), expected, atol=1e-5)


# checkpointing lives in the model class's forward_features (checkpoint_seq), not in the block:
# one base per model class (ResNet, ResNetV2, RegNet, ByobNet, DPN)
CHECKPOINT_BASES = [b for b in ('resnet10t', 'resnetv2_18', 'regnetx_002', 'test_byobnet', 'dpn68') if b in BASES]


@pytest.mark.parametrize('base', CHECKPOINT_BASES)
def test_grad_checkpointing_replays_the_same_masks(base):
    model = timm.create_model(base + '_dropres', num_classes=5).train()
    x = X[:, :, :32, :32]
    torch.manual_seed(1)
    model(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    torch.manual_seed(1)
    model(x).sum().backward()
    assert all(torch.allclose(g, p.grad, atol=1e-5) for g, p in zip(grads, model.parameters()))


def test_timm_is_unchanged_for_everyone_else(tmp_path):
    """A plain resnet built before and after the plugin (in a fresh process) is the same model."""
    import subprocess
    import sys
    script = tmp_path / 'check.py'
    script.write_text(
        'import os, torch, timm\n'
        'from timm.models import resnet, resnetv2\n'
        'def build(name):\n'
        '    torch.manual_seed(0)\n'
        '    m = timm.create_model(name).eval()\n'
        '    with torch.no_grad():\n'
        '        return repr(m), type(m), m(torch.ones(1, 3, 32, 32))\n'
        'names = ["resnet50", "resnetv2_50"]\n'
        'fns = [resnet.ResNet.forward_head, resnet.Bottleneck.forward, resnetv2.PreActBottleneck.forward]\n'
        'before = [build(n) for n in names]\n'
        'import timm_dropres\n'
        'for n in names: timm.create_model(n + "_dropres", branch_drop_pos="after_add")\n'
        'after = [build(n) for n in names]\n'
        'assert [b[:2] for b in before] == [a[:2] for a in after]\n'
        'assert all(torch.equal(b[2], a[2]) for b, a in zip(before, after))\n'
        'assert fns == [resnet.ResNet.forward_head, resnet.Bottleneck.forward, resnetv2.PreActBottleneck.forward]\n'
        'print("unchanged")\n')
    env = {k: v for k, v in __import__('os').environ.items()}
    env['TIMM_DROPRES_AUTOLOAD'] = '0'  # the plugin must arrive only with the explicit import
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'unchanged'
