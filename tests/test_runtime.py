"""What timm users switch on keeps working with the variants: torch.compile (train and eval),
channels_last, bf16 autocast on CPU, model EMA (timm.utils.ModelEmaV3) and torch.export.

The smallest variant (resnet10t_dropres) at 32 px keeps torch.compile's CPU code generation short.
"""
from __future__ import annotations

from typing import Dict

import pytest
import torch
import torch.nn as nn
import timm
from timm.utils import ModelEmaV3

MODEL = 'resnet10t_dropres'
DROPOUTS = 5  # resnet10t: one per BasicBlock (4) + the pre-pool head dropout
DROP_OPS = ('dropout', 'bernoulli', 'rand')


@pytest.fixture
def model() -> nn.Module:
    return timm.create_model(MODEL, num_classes=2)


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32)


def _dropped_fractions(model: nn.Module) -> Dict[str, list]:
    """Per dropout module: the fraction of its non-zero inputs that each call zeroed (filled on forward)."""
    fractions: Dict[str, list] = {}

    def hook(name):
        def record(module, inputs, output):
            nonzero = inputs[0] != 0
            fractions.setdefault(name, []).append(((output == 0) & nonzero).sum().item() / nonzero.sum().item())
            assert output.dtype == inputs[0].dtype
        return record
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout):
            module.register_forward_hook(hook(name))
    return fractions


def test_compile_eval_matches_eager(model, batch):
    model.eval()
    with torch.no_grad():
        eager = model(batch)
        compiled = torch.compile(model)(batch)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_compile_train_drops_like_eager(model, batch):
    """In train mode the compiled model drops what eager drops: the same seed gives eager's output,
    another seed another one, and backward runs through the compiled graph.

    Backend aot_eager: TorchDynamo and AOTAutograd trace the variant's forward and backward (the
    generated subclasses, the dropout RNG) exactly as for inductor; only inductor's CPU code
    generation, a minute of C++ compiling per graph, is left to the eval test above (and to train.py
    --torchcompile, run on a GPU).
    """
    model.train()
    compiled = torch.compile(model, backend='aot_eager')
    torch.manual_seed(0)
    eager = model(batch)
    torch.manual_seed(0)
    same_seed = compiled(batch)
    torch.manual_seed(1)
    other_seed = compiled(batch)
    other_seed.sum().backward()
    torch.testing.assert_close(same_seed, eager, rtol=1e-5, atol=1e-5)
    assert (other_seed - same_seed).abs().max() > 1e-2, 'train mode must drop: outputs depend on the seed'
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_channels_last(model, batch):
    eager = model.eval()(batch)
    model.to(memory_format=torch.channels_last)
    nhwc = batch.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        features = model.forward_features(nhwc)
        torch.testing.assert_close(model(nhwc), eager, rtol=1e-4, atol=1e-4)
    assert features.is_contiguous(memory_format=torch.channels_last)
    fractions = _dropped_fractions(model)
    model.train()(nhwc).sum().backward()
    assert len(fractions) == DROPOUTS and all(f[0] > 0 for f in fractions.values())


def test_autocast_bf16_on_cpu(model):
    batch = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        full = model.eval()(batch)
    fractions = _dropped_fractions(model)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        with torch.no_grad():
            half = model(batch)
        train_out = model.train()(batch)
    assert half.dtype == train_out.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), full, rtol=0.1, atol=0.1)
    train_out.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert len(fractions) == DROPOUTS
    for name, (train_fraction,) in ((n, f[1:]) for n, f in fractions.items()):
        p = model.get_submodule(name).p
        assert abs(train_fraction - p) < 0.05, f'{name} zeroed {train_fraction:.3f} in bf16, expected about {p}'
    assert all(f[0] == 0 for f in fractions.values()), 'eval must not drop'


def test_model_ema_v3_keeps_the_variant(model, batch):
    ema = ModelEmaV3(model, decay=0.5)
    assert type(ema.module) is type(model)
    assert ema.module.dropres_settings == model.dropres_settings
    assert [n for n, m in ema.module.named_modules() if isinstance(m, nn.Dropout)] == \
           [n for n, m in model.named_modules() if isinstance(m, nn.Dropout)]
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)  # no step: the full decay, 0.5
    for name, p in model.named_parameters():
        torch.testing.assert_close(ema.module.get_parameter(name), 0.5 * before[name] + 0.5 * p.detach())
    with torch.no_grad():
        assert torch.equal(ema.module.eval()(batch), ema.module(batch)), 'EMA eval is deterministic'


def test_export_eval_graph_has_no_dropout(model, batch):
    """torch.export of the eval model: the training IR keeps each dropout as a no-op
    (aten.dropout with train=False); the inference IR that deployment uses has none left."""
    exported = torch.export.export(model.eval(), (batch,))
    recorded = [n.args[1:] for n in exported.graph.nodes if 'dropout' in str(n.target)]
    assert sorted(recorded) == sorted([(0.1, False)] * 4 + [(0.2, False)])
    inference = exported.run_decompositions()
    assert not [n for n in inference.graph.nodes if any(op in str(n.target) for op in DROP_OPS)]
    with torch.no_grad():
        assert torch.equal(inference.module()(batch), model(batch))

    train_ir = torch.export.export(model.train(), (batch,)).run_decompositions()
    assert sum('native_dropout' in str(n.target) for n in train_ir.graph.nodes) == DROPOUTS
