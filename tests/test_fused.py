"""The fused ReLU+dropout: dropout's math, ReLU's gradient, nothing extra saved, eval untouched."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import timm

from timm_dropres.fused import ReLUDropout, fast_cpu_keep_mask, fuse_relu_dropout


def _saved_bytes(model, x) -> int:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return sum(storages.values())


@pytest.mark.parametrize('fast_cpu_mask', [True, False])
def test_forward_is_relu_with_kept_elements_scaled(fast_cpu_mask):
    x = torch.randn(64, 32, 8, 8)
    y = ReLUDropout(0.25, fast_cpu_mask).train()(x.clone())
    kept = y != 0
    assert torch.allclose(y[kept], F.relu(x)[kept] / 0.75)
    positive = x > 0
    dropped_share = 1 - kept[positive].float().mean().item()
    assert abs(dropped_share - 0.25) < 0.02  # 65k positive elements: std of the share ~0.002


@pytest.mark.parametrize('fast_cpu_mask', [True, False])
def test_gradient_is_dropout_of_relu_gradient(fast_cpu_mask):
    x = torch.randn(16, 8, 6, 6, requires_grad=True)
    g = torch.randn(16, 8, 6, 6)
    y = ReLUDropout(0.375, fast_cpu_mask).train()(x * 1.0)  # through a non-leaf, as in a network
    y.backward(g)
    kept = (y != 0).detach()
    expected = torch.where(kept & (x > 0), g / 0.625, torch.zeros_like(g))
    assert torch.allclose(x.grad, expected)


@pytest.mark.parametrize('p', [0.1, 0.3, 0.5])
def test_fast_cpu_mask_realises_p_to_16_bits(p):
    x = torch.empty(7, 11, 13, 17)  # numel not a multiple of 4: the last 64-bit word is cut
    keep, realised = fast_cpu_keep_mask(x, p)
    assert keep.shape == x.shape and set(keep.unique().tolist()) <= {0, 1}
    assert realised == round(p * 2 ** 16) / 2 ** 16 and abs(realised - p) <= 2 ** -17
    big = torch.empty(2 ** 20)
    share = 1 - fast_cpu_keep_mask(big, p)[0].float().mean().item()
    assert abs(share - realised) < 5 * (p * (1 - p) / big.numel()) ** 0.5  # 5 sigma
    torch.manual_seed(3)
    first = fast_cpu_keep_mask(x, p)[0]
    torch.manual_seed(3)
    assert torch.equal(first, fast_cpu_keep_mask(x, p)[0])  # torch.manual_seed makes it reproducible


def test_fast_cpu_mask_lanes_are_independent():
    """The four 16-bit lanes of a word must not drop together: pairwise joint drop rate ~ p**2."""
    keep, p = fast_cpu_keep_mask(torch.empty(2 ** 20), 0.5)
    lanes = 1 - keep.view(-1, 4).float()
    for i in range(4):
        for j in range(i + 1, 4):
            assert abs((lanes[:, i] * lanes[:, j]).mean().item() - p * p) < 0.005


def test_eval_and_zero_rate_are_exactly_relu():
    x = torch.randn(4, 8, 5, 5)
    assert torch.equal(ReLUDropout(0.5).eval()(x.clone()), F.relu(x))
    assert torch.equal(ReLUDropout(0.0).train()(x.clone()), F.relu(x))


@pytest.mark.parametrize('bad', [-0.1, 1.0])
def test_rejects_bad_rate(bad):
    with pytest.raises(ValueError, match='p must be in \\[0, 1\\)'):
        ReLUDropout(bad)


@pytest.mark.parametrize('name, blocks', [('resnet10t', 4), ('resnet14t', 4), ('resnetv2_18', 8)])
def test_fused_model_keeps_weights_and_eval_output_and_saves_less(name, blocks):
    variant = timm.create_model(f'{name}_dropres', num_classes=5)
    for m in variant.modules():  # random BN so that every branch matters in eval
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            m.running_var.uniform_(0.5, 1.5)
    fused = copy.deepcopy(variant)
    assert fuse_relu_dropout(fused) == blocks
    assert fuse_relu_dropout(fused) == 0  # nothing left to fuse
    assert fused.state_dict().keys() == variant.state_dict().keys()
    assert sum(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in fused.modules()) == 1  # the pre-pool head

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fused.eval()(x), variant.eval()(x))
    base = timm.create_model(name, num_classes=5)
    base_saved, variant_saved, fused_saved = (_saved_bytes(m.train(), x) for m in (base, variant, fused))
    assert variant_saved > fused_saved
    # what the fused variant still saves beyond the base is the pre-pool head dropout alone
    # (its mask; the pool saves nothing): what that nn.Dropout saves on the final 1x1 map
    head_map = torch.randn(2, fused.num_features, 1, 1, requires_grad=True)
    assert fused_saved - base_saved == _saved_bytes(torch.nn.Dropout(0.2).train(), head_map)


def _nn_dropout_draws_like_native_dropout() -> bool:
    """Whether this torch's nn.Dropout and torch.native_dropout take the same mask from one seed."""
    x = torch.ones(4096, requires_grad=True)
    torch.manual_seed(0)
    a = F.dropout(x, 0.5, True)
    torch.manual_seed(0)
    b, _ = torch.native_dropout(x.detach(), 0.5, True)
    return torch.equal(a.detach(), b)


@pytest.mark.skipif(not _nn_dropout_draws_like_native_dropout(),
                    reason='this torch draws nn.Dropout masks differently from native_dropout on CPU')
@pytest.mark.parametrize('name, branch_drop_pos', [
    ('resnet10t', 'guideline'), ('resnet10t', 'after_add'), ('resnetv2_18', 'guideline')])
def test_fused_model_trains_exactly_like_the_unfused_one(name, branch_drop_pos):
    variant = timm.create_model(f'{name}_dropres', num_classes=4, branch_drop_pos=branch_drop_pos).train()
    fused = copy.deepcopy(variant)
    assert fuse_relu_dropout(fused, fast_cpu_mask=False) > 0
    x = torch.randn(2, 3, 32, 32)
    outputs, grads = [], []
    for model in (variant, fused):
        torch.manual_seed(7)
        out = model(x)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.equal(outputs[0], outputs[1])
    torch.testing.assert_close(grads[1], grads[0])


def test_fused_model_trains_and_scripts():
    model = timm.create_model('resnet10t_dropres', num_classes=3)
    fuse_relu_dropout(model)
    x = torch.randn(2, 3, 32, 32)
    model.train()(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    scripted = torch.jit.script(model.eval())
    assert torch.equal(scripted(x), model(x))
