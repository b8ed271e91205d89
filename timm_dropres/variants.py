"""`<base>_dropres` variants, generated from timm's own registry and registered in it.

A variant is its base model built by timm's own entrypoint, then `apply`-ed: same parameters, so
every pretrained tag of the base is offered for the variant (its cfg points at the base weights'
hf_hub_id) with `architecture` set to the variant, so saved and pushed models rebuild as the variant.
timm's `register_model` reads pretrained cfgs from the entrypoint's module, hence `default_cfgs`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List

import torch.nn as nn
from timm.models import (
    generate_default_cfgs, get_arch_pretrained_cfgs, is_model, list_models, model_entrypoint,
    register_model, resolve_pretrained_cfg, split_model_name_tag,
)

from .convert import apply
from .settings import DropResSettings

SUFFIX = '_dropres'
FAMILIES = ('resnet', 'resnetv2')
"""timm registry modules whose every model is built from blocks in `placement.BLOCK_SLOTS`."""

default_cfgs: Dict[str, Any] = {}


def variant_name(base: str) -> str:
    return base + SUFFIX


def register_variants() -> List[str]:
    """Register a `*_dropres` variant for every model of `FAMILIES`; idempotent. Returns the names."""
    names = []
    for base in list_models(module=list(FAMILIES)):
        name = variant_name(base)
        if not is_model(name):
            default_cfgs.update(_variant_cfgs(base, name))
            register_model(_make_entrypoint(base, name))
        names.append(name)
    return names


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
