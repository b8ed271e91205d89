"""`<base>_dropres` variants, generated from timm's own registry and registered in it.

A variant is its base model built by timm's own entrypoint, then `apply`-ed: same parameters, so
every pretrained tag of the base is offered for the variant (its cfg points at the base weights'
hf_hub_id) with `architecture` set to the variant, so saved and pushed models rebuild as the variant.
timm's `register_model` reads pretrained cfgs from the entrypoint's module, hence `default_cfgs`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List

import torch.nn as nn
from timm.layers import get_norm_layer
from timm.models import (
    byobnet, generate_default_cfgs, get_arch_pretrained_cfgs, is_model, list_models, model_entrypoint, regnet,
    register_model, resolve_pretrained_cfg, split_model_name_tag,
)
from timm.models.dpn import DualPathBlock
from timm.models.res2net import Bottle2neck

from .convert import apply
from .placement import BLOCK_SLOTS
from .settings import DropResSettings

SUFFIX = '_dropres'
FAMILIES = ('resnet', 'resnetv2', 'resnest', 'sknet') + tuple(
    module for module, block in (('res2net', Bottle2neck), ('dpn', DualPathBlock)) if block in BLOCK_SLOTS)
"""timm registry modules whose every model is built from blocks in `placement.BLOCK_SLOTS` (res2net's and
dpn's blocks are there with timm >= 1.0.31). Modules with only some such models are in `MODEL_FILTERS`."""

default_cfgs: Dict[str, Any] = {}


def variant_name(base: str) -> str:
    return base + SUFFIX


def register_variants() -> List[str]:
    """Register a `*_dropres` variant for every model of `FAMILIES` and every model `MODEL_FILTERS` accepts;
    idempotent. Returns the names."""
    names = []
    for base in _supported_bases():
        name = variant_name(base)
        if not is_model(name):
            default_cfgs.update(_variant_cfgs(base, name))
            register_model(_make_entrypoint(base, name))
        names.append(name)
    return names


def _regnet_qualifies(base: str) -> bool:
    """BN, and a shortcut in every block: regnetz_* (downsample=None) have none in each stage's first block."""
    cfg = regnet.model_cfgs.get(base)
    return cfg is not None and get_norm_layer(cfg.norm_layer) is nn.BatchNorm2d and bool(cfg.downsample)


def _byobnet_qualifies(base: str) -> bool:
    """Read from the model's ByoModelCfg (building it is too slow at import): BN, every block of a class in
    BLOCK_SLOTS and with a shortcut, and a global-pool head (attn_* heads pool by attention)."""
    cfg = byobnet.model_cfgs.get(base)
    if cfg is None or get_norm_layer(cfg.norm_layer) is not nn.BatchNorm2d or cfg.head_type in ('attn_abs', 'attn_rot'):
        return False
    blocks = [b for stage in cfg.blocks for b in (stage if isinstance(stage, (tuple, list)) else (stage,))]
    return all(
        _byobnet_block_class(b.type) in BLOCK_SLOTS
        and byobnet.override_kwargs(b.block_kwargs, cfg.block_kwargs).get('downsample', cfg.downsample)
        for b in blocks)


def _byobnet_block_class(block_type: Any) -> Any:
    """A ByoBlockCfg.type as a class: a name in byobnet's block registry (register_block's table) or a class."""
    return byobnet._block_registry.get(block_type) if isinstance(block_type, str) else block_type


MODEL_FILTERS: Dict[str, Callable[[str], bool]] = {'regnet': _regnet_qualifies, 'byobnet': _byobnet_qualifies}
"""timm registry modules with only some supported models -> the filter that picks them."""


def _supported_bases() -> List[str]:
    bases = list_models(module=list(FAMILIES))
    for module, keep in MODEL_FILTERS.items():
        bases += [base for base in list_models(module=module) if keep(base)]
    return bases


def _variant_cfgs(base: str, name: str) -> Dict[str, Any]:
    """The base's pretrained cfgs (weights source included) under the variant's name, default tag first."""
    cfgs = {}
    for i, (base_with_tag, cfg) in enumerate(get_arch_pretrained_cfgs(base).items()):
        _, tag = split_model_name_tag(base_with_tag)
        key = f'{name}.{tag}*' if i == 0 and tag else (f'{name}.{tag}' if tag else name)
        cfgs[key] = cfg
    return generate_default_cfgs(cfgs)


def _make_entrypoint(base: str, name: str) -> Callable[..., nn.Module]:
    def entrypoint(
            pretrained: bool = False,
            *,
            branch_drop_rate: float = DropResSettings.branch_drop_rate,
            drop_rate: float = DropResSettings.drop_rate,
            branch_drop_pos: str = DropResSettings.branch_drop_pos,
            head_drop_pos: str = DropResSettings.head_drop_pos,
            **kwargs: Any,
    ) -> nn.Module:
        settings = DropResSettings(branch_drop_rate, drop_rate, branch_drop_pos, head_drop_pos)
        kwargs['pretrained_cfg'] = resolve_pretrained_cfg(name, pretrained_cfg=kwargs.get('pretrained_cfg'))
        model = model_entrypoint(base)(pretrained=pretrained, **kwargs)
        if kwargs.get('features_only'):
            settings = DropResSettings(branch_drop_rate, 0.0, branch_drop_pos, head_drop_pos)  # no head
        return apply(model, **settings.as_kwargs())

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f'timm `{base}` with the dropres dropout rule (same parameters and weights).'
    return entrypoint
