"""`apply`: the dropout rule on a timm model instance, in place."""
from __future__ import annotations

from typing import List, Tuple

import torch.nn as nn

from .head import apply_head, check_head
from .insertion import drop_output_of, output_site
from .placement import BLOCK_SLOTS, residual_blocks
from .settings import DropResSettings

SETTINGS_ATTR = 'dropres_settings'


def apply(
        model: nn.Module,
        branch_drop_rate: float = 0.1,
        drop_rate: float = 0.2,
        branch_drop_pos: str = 'guideline',
        head_drop_pos: str = 'pre_pool',
) -> nn.Module:
    """Apply the dropout rule of Kim et al. (UAI 2023) to `model` in place and return it.

    Adds one nn.Dropout(branch_drop_rate) to every supported residual block at `branch_drop_pos`,
    and the head dropout (drop_rate) at `head_drop_pos`. No parameter or buffer is added, moved or
    renamed, so the model's weights load as they are. A rate of 0 adds no module.

    Args:
        model: a timm model (or a features_only wrapper when drop_rate is 0).
        branch_drop_rate: residual-branch dropout probability, in [0, 1).
        drop_rate: head dropout probability, in [0, 1); replaces timm's post-pool dropout
            when head_drop_pos is 'pre_pool'.
        branch_drop_pos: 'guideline', 'branch_end', 'after_add' or 'before_norm'.
        head_drop_pos: 'pre_pool' or 'post_pool'.
    """
    settings = DropResSettings(branch_drop_rate, drop_rate, branch_drop_pos, head_drop_pos)
    if hasattr(model, SETTINGS_ATTR):
        raise ValueError(f'model already has dropres dropout ({getattr(model, SETTINGS_ATTR)}); apply it to a fresh model')
    # check everything before changing anything: a refused model is left as it was
    sites = _branch_sites(model, settings) if settings.branch_drop_rate > 0 else []
    check_head(model, settings.head_drop_pos, settings.drop_rate)

    for block, path in sites:
        drop_output_of(block, path, settings.branch_drop_rate)
    apply_head(model, settings.head_drop_pos, settings.drop_rate)
    setattr(model, SETTINGS_ATTR, settings)
    return model


def _branch_sites(model: nn.Module, settings: DropResSettings) -> List[Tuple[nn.Module, str]]:
    """(block, path of the submodule whose output is dropped) for every supported block, all checked."""
    sites = [(block, slots.path(settings.branch_drop_pos)) for _, block, slots in residual_blocks(model)]
    if not sites:
        raise ValueError(
            f'branch_drop_rate > 0 needs a supported residual block; {type(model).__name__} has '
            f'{_model_specific_classes(model) or "none"}. Supported: '
            f'{", ".join(cls.__name__ for cls in BLOCK_SLOTS)}. Use branch_drop_rate=0 for the head rule alone.')
    for block, path in sites:
        try:
            output_site(block, path)
        except ValueError as e:
            raise ValueError(f'branch_drop_pos={settings.branch_drop_pos!r} is not available here: {e}') from e
    return sites


def _model_specific_classes(model: nn.Module) -> str:
    """The block-like classes of a model: those defined in timm.models (layers live in timm.layers)."""
    names = {type(m).__name__ for m in model.modules() if type(m).__module__.startswith('timm.models.')}
    names.discard(type(model).__name__)
    return ', '.join(sorted(names))
