"""ReLU + dropout as one autograd op that saves only its output: the guideline dropout at no memory cost.

At the guideline slot the dropout follows a ReLU and feeds a conv. Unfused, training keeps three
things for backward there: the ReLU output (ReLU's own backward and, without dropout, the conv's
input: one tensor), the dropout's mask and the dropout output (the conv's new input), i.e.
several extra bytes per element (on CUDA a 1-byte mask, on CPU a float mask, plus the dropout
output). Fused, y = relu(x) * mask / (1 - p) and only y is saved: grad_x = grad_y * [y > 0] / (1 - p),
because y > 0 exactly where x > 0 and the mask kept the element. The conv saves the same y, so
training keeps nothing beyond what the base model keeps; the mask lives only during the forward.

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


class _ReLUDropoutFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        # torch's own dropout kernel (one fused kernel on CUDA, the same mask nn.Dropout draws there);
        # its mask and the ReLU output are temporaries: only y outlives the forward
        y, _ = torch.native_dropout(torch.relu(x), p, True)
        ctx.save_for_backward(y)
        ctx.scale = 1.0 / (1.0 - p)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad * ctx.scale, y, 0), None


@torch.fx.wrap
def relu_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """In-place relu(x) then element-wise dropout(p) in training; saves only the output for backward.

    A leaf for torch.fx (`torch.fx.wrap`), so a traced graph keeps it as one call.
    """
    if not training or p == 0.0:
        return F.relu(x, inplace=True)
    if not x.requires_grad or not torch.is_grad_enabled():
        return F.dropout(F.relu(x, inplace=True), p, True, inplace=True)
    return _ReLUDropoutFunction.apply(x, p)


@register_notrace_module  # timm's FX feature extraction keeps it a leaf, so `training` is read at run time
class ReLUDropout(nn.Module):
    """`nn.ReLU(inplace=True)` followed by `nn.Dropout(p)`, fused (see the module docstring)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f'p must be in [0, 1), got {p!r}')
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return F.dropout(F.relu(x), self.p, self.training)
        return relu_dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f'p={self.p}'


def _fusable(act: nn.Module, drop: nn.Module) -> bool:
    return type(act) is nn.ReLU and act.inplace and type(drop) is nn.Dropout


def fuse_relu_dropout(model: nn.Module) -> int:
    """Replace every ReLU -> Dropout pair of `model` by one `ReLUDropout`, in place; return the count.

    Two shapes, both what timm_dropres.insertion makes at the guideline slot: the sibling pair of
    `SIBLING_SLOTS` (timm resnet.py blocks: act -> aa), and nn.Sequential(ReLU, Dropout) (the act of
    a timm norm-act layer, resnetv2). A dropout after anything but a plain ReLU is left as it is.
    """
    count = 0
    for module in list(model.modules()):
        pair = SIBLING_SLOTS.get(type(module))
        if pair is not None:
            act_name, drop_name = pair
            act, drop = getattr(module, act_name), getattr(module, drop_name)
            if _fusable(act, drop):
                setattr(module, act_name, ReLUDropout(drop.p))
                setattr(module, drop_name, nn.Identity())
                count += 1
        for name, child in list(module.named_children()):
            if type(child) is nn.Sequential and len(child) == 2 and _fusable(child[0], child[1]):
                setattr(module, name, ReLUDropout(child[1].p))
                count += 1
    return count
