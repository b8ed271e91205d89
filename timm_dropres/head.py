"""The head rule: element-wise dropout on the feature map before global pooling.

timm drops after the pool (`F.dropout` on the pooled vector, or a Dropout in ClassifierHead).
Before the pool, the average over H*W independent masks shrinks the train/eval mismatch of the
logits by about H*W. The pre-pool dropout lives in the model's `forward_head`, so
`forward_features` stays deterministic and `reset_classifier` (which rebuilds pool and fc) keeps it.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Dict, Type

import torch
import torch.nn as nn
from timm.layers import SelectAdaptivePool2d
from timm.models.byobnet import ByobNet
from timm.models.convnext import ConvNeXt
from timm.models.densenet import DenseNet
from timm.models.dpn import DPN
from timm.models.efficientnet import EfficientNet
from timm.models.mobilenetv3 import MobileNetV3
from timm.models.regnet import RegNet
from timm.models.resnet import ResNet
from timm.models.resnetv2 import ResNetV2

from .insertion import subclass_with

POST_POOL_DROPOUT: Dict[Type[nn.Module], str] = {
    # where each model class keeps timm's own post-pool dropout: a float attribute or a Dropout module
    ResNet: 'drop_rate',  # also resnest, res2net, sknet
    ResNetV2: 'head.drop',
    RegNet: 'head.drop',
    ByobNet: 'head.drop',  # ClassifierHead, NormMlpClassifierHead and the attention pools all keep it as `drop`
    DPN: 'drop_rate',
    DenseNet: 'head_drop',
    EfficientNet: 'drop_rate',  # also mnasnet, mixnet, tinynet, fbnet, ... (one class)
    MobileNetV3: 'drop_rate',  # after conv_head; also mobilenetv4, lcnet
    ConvNeXt: 'head.drop',
}


class _PrePoolDropout:
    """Holds the forward_head that the generated model subclasses use."""

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self._forward_pooled_head(self.pre_pool_drop(x), pre_logits=pre_logits)


@lru_cache(maxsize=None)
def _pre_pool_class(base: Type[nn.Module]) -> Type[nn.Module]:
    return subclass_with(base, 'forward_head', _PrePoolDropout.forward_head, '_forward_pooled_head')


def has_global_pool(model: nn.Module) -> bool:
    return any(isinstance(m, SelectAdaptivePool2d) for m in model.modules())


def check_head(model: nn.Module, head_drop_pos: str, p: float) -> None:
    """Raise, before anything changes, if the head dropout cannot go on `model` as asked."""
    if head_drop_pos == 'post_pool':
        if p > 0 and post_pool_path(model) is None:
            raise ValueError(
                f"head_drop_pos='post_pool' sets timm's own head dropout, which timm_dropres knows for "
                f'{_known_classes()}; {type(model).__name__} is not one. Pass drop_rate to timm.create_model instead.')
    elif p > 0:
        check_pre_pool(model)


def check_pre_pool(model: nn.Module) -> None:
    """Raise unless a pre-pool dropout can go on `model`: it needs a global pool, and timm's own post-pool
    dropout must be one timm_dropres can switch off (or reported as 0), else the two would stack."""
    if not has_global_pool(model) or not hasattr(model, 'forward_head'):
        raise ValueError(
            f'head_drop_pos=\'pre_pool\' needs a model with forward_head and a global pool '
            f'(timm SelectAdaptivePool2d); {type(model).__name__} has none. Use drop_rate=0.')
    if post_pool_path(model) is None and getattr(model, 'drop_rate', None) != 0:
        raise ValueError(
            "head_drop_pos='pre_pool' replaces timm's own post-pool dropout, but timm_dropres does not know where "
            f'{type(model).__name__} keeps it (it knows {_known_classes()}) and the model does not report '
            'drop_rate=0, so two head dropouts would stack. Build it with timm.create_model(..., drop_rate=0) '
            "(timm's own head dropout off), or add its class to timm_dropres.head.POST_POOL_DROPOUT.")


def apply_head(model: nn.Module, head_drop_pos: str, p: float) -> None:
    """Put the head dropout at `head_drop_pos` with rate `p` (checked by `check_head`).

    'pre_pool' switches timm's own post-pool dropout off, so the head has exactly one dropout.
    """
    if head_drop_pos == 'post_pool':
        _set_post_pool_rate(model, p)
        return
    _set_post_pool_rate(model, 0.0)
    if p > 0:
        model.__class__ = _pre_pool_class(type(model))
        model.pre_pool_drop = nn.Dropout(p)


def post_pool_path(model: nn.Module) -> str | None:
    """Where `model` keeps timm's own post-pool dropout (see POST_POOL_DROPOUT), or None if unknown."""
    return next((path for cls, path in POST_POOL_DROPOUT.items() if isinstance(model, cls)), None)


def _known_classes() -> str:
    return ', '.join(cls.__name__ for cls in POST_POOL_DROPOUT)


def _set_post_pool_rate(model: nn.Module, p: float) -> None:
    """Set timm's own post-pool dropout of `model` to `p`; a model of unknown class has none to set."""
    path = post_pool_path(model)
    if path is None:
        return
    parent, _, name = path.rpartition('.')
    owner = model.get_submodule(parent)
    if isinstance(getattr(owner, name), nn.Module):
        setattr(owner, name, nn.Dropout(p))
    else:
        setattr(owner, name, p)
