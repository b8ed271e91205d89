"""ReLU + dropout as one autograd op that saves only its output: the guideline dropout at no memory cost.

At the guideline slot the dropout follows a ReLU and feeds a conv. Unfused, training keeps three
things for backward there: the ReLU output (ReLU's own backward and, without dropout, the conv's
input: one tensor), the dropout's mask and the dropout output (the conv's new input), i.e.
several extra bytes per element (on CUDA a 1-byte mask, on CPU a float mask, plus the dropout
output). Fused, y = relu(x) * mask / (1 - p) and only y is saved: grad_x = grad_y * [y > 0] / (1 - p),
because y > 0 exactly where x > 0 and the mask kept the element. The conv saves the same y, so
training keeps nothing beyond what the base model keeps; the mask lives only during the forward.

The mask: on CUDA torch's own fused dropout kernel (the mask nn.Dropout draws); on CPU, where
random-number generation dominates a dropout's cost, 16 random bits per element (`fast_cpu_keep_mask`).

In eval (or with p == 0) the module is exactly an in-place ReLU, so eval outputs stay bit-identical.

`fuse_relu_dropout(model)` rewrites a `*_dropres` model in place (every ReLU -> Dropout pair: the
guideline slot of every block, and 'after_add' in resnet.py blocks); it changes no parameter or
buffer. TorchScript cannot compile a custom autograd Function, so under
torch.jit.script the module falls back to the unfused ReLU + F.dropout (same math, more memory).
"""
from __future__ import annotations

from typing import Dict, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_module
from timm.models.resnet import BasicBlock, Bottleneck

SIBLING_SLOTS: Dict[Type[nn.Module], Tuple[str, str]] = {
    # post-activation blocks: (the ReLU attribute, the guideline Dropout attribute right after it)
    BasicBlock: ('act1', 'aa'),
    Bottleneck: ('act2', 'aa'),
}
"""Where a ReLU and the guideline dropout are sibling attributes, called one right after the other."""


MASK_BITS = 16
"""Random bits per element of the fast CPU mask: the drop probability is rounded to a multiple of 2**-16."""


def fast_cpu_keep_mask(x: torch.Tensor, p: float) -> Tuple[torch.Tensor, float]:
    """A 0/1 keep mask shaped like `x` (int16) and the drop probability it realises.

    CPU bernoulli_ draws one 32-bit number per element and dominates the cost of a dropout there
    (more than a ReLU by ~50x). Here 64-bit words from torch's generator (seeded by
    torch.manual_seed as usual) are split into four 16-bit lanes, and a lane below the threshold
    drops its element: about 8x cheaper. The realised p is round(p * 2**16) / 2**16 (off by at most
    8e-6), and the caller scales by 1 / (1 - realised p), so the expectation is exact.
    """
    n, levels = x.numel(), 1 << MASK_BITS
    dropped_levels = round(p * levels)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-2 ** 63, None)
    keep = words.view(torch.int16)[:n].view(x.shape).ge_(dropped_levels - levels // 2)
    return keep, dropped_levels / levels


def _relu_dropout_values(x: torch.Tensor, p: float, fast_cpu_mask: bool) -> Tuple[torch.Tensor, float]:
    """relu(x) * mask / (1 - p) as a new tensor, and that scale."""
    if fast_cpu_mask and x.device.type == 'cpu':
        keep, p = fast_cpu_keep_mask(x, p)
        return torch.relu(x).mul_(keep).mul_(1.0 / (1.0 - p)), 1.0 / (1.0 - p)
    # torch's own dropout kernel: one fused kernel on CUDA, drawing the mask nn.Dropout draws there
    y, _ = torch.native_dropout(torch.relu(x), p, True)
    return y, 1.0 / (1.0 - p)


class _ReLUDropoutFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, fast_cpu_mask: bool) -> torch.Tensor:
        # the mask and the ReLU output are temporaries: only y outlives the forward
        y, ctx.scale = _relu_dropout_values(x, p, fast_cpu_mask)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad * ctx.scale, y, 0), None, None


@torch.fx.wrap
def relu_dropout(x: torch.Tensor, p: float, training: bool, fast_cpu_mask: bool = True) -> torch.Tensor:
    """relu(x) then element-wise dropout(p) in training; saves only the output for backward.

    In eval (or with p == 0) an in-place ReLU. A leaf for torch.fx (`torch.fx.wrap`), so a traced
    graph keeps it as one call. `fast_cpu_mask=False` draws the mask with torch.native_dropout on
    every device (on CPU the same mask nn.Dropout draws, at ~8x the cost of the fast one).
    """
    if not training or p == 0.0:
        return F.relu(x, inplace=True)
    if not x.requires_grad or not torch.is_grad_enabled():
        return _relu_dropout_values(x, p, fast_cpu_mask)[0]
    return _ReLUDropoutFunction.apply(x, p, fast_cpu_mask)


@register_notrace_module  # timm's FX feature extraction keeps it a leaf, so `training` is read at run time
class ReLUDropout(nn.Module):
    """`nn.ReLU(inplace=True)` followed by `nn.Dropout(p)`, fused (see the module docstring)."""

    def __init__(self, p: float, fast_cpu_mask: bool = True) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f'p must be in [0, 1), got {p!r}')
        self.p = float(p)
        self.fast_cpu_mask = fast_cpu_mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return F.dropout(F.relu(x), self.p, self.training)
        return relu_dropout(x, self.p, self.training, self.fast_cpu_mask)

    def extra_repr(self) -> str:
        return f'p={self.p}' + ('' if self.fast_cpu_mask else ', fast_cpu_mask=False')


def _fusable(act: nn.Module, drop: nn.Module) -> bool:
    return type(act) is nn.ReLU and act.inplace and type(drop) is nn.Dropout


def fuse_relu_dropout(model: nn.Module, fast_cpu_mask: bool = True) -> int:
    """Replace every ReLU -> Dropout pair of `model` by one `ReLUDropout`, in place; return the count.

    Two shapes, both what timm_dropres.insertion makes at the guideline slot: the sibling pair of
    `SIBLING_SLOTS` (timm resnet.py blocks: act -> aa), and nn.Sequential(ReLU, Dropout) (the act of
    a timm norm-act layer, resnetv2). A dropout after anything but an in-place ReLU is left as it is.
    `fast_cpu_mask`: see `relu_dropout`.
    """
    count = 0
    for module in list(model.modules()):
        pair = SIBLING_SLOTS.get(type(module))
        if pair is not None:
            act_name, drop_name = pair
            act, drop = getattr(module, act_name), getattr(module, drop_name)
            if _fusable(act, drop):
                setattr(module, act_name, ReLUDropout(drop.p, fast_cpu_mask))
                setattr(module, drop_name, nn.Identity())
                count += 1
        for name, child in list(module.named_children()):
            if type(child) is nn.Sequential and len(child) == 2 and _fusable(child[0], child[1]):
                setattr(module, name, ReLUDropout(child[1].p, fast_cpu_mask))
                count += 1
    return count
