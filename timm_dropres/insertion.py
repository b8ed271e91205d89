"""How one dropout is put on the output of one submodule, without touching any state_dict key.

Four cases, cheapest first:
1. an empty slot (None or nn.Identity, e.g. timm's `aa` or `drop_path`) becomes the nn.Dropout;
2. a timm norm+act layer (BatchNormAct2d, GroupNormAct, ...) gets the dropout after its `act`:
   timm's convert_sync_batchnorm carries `act` over to the synced layer, so `--sync-bn` keeps it;
3. a module without state (an activation, DropPath, a blur pool) becomes
   nn.Sequential(module, nn.Dropout): its state_dict is empty, so no key moves;
4. a module with state (a conv, a whole block) keeps its parameters under their names and gets a
   subclass that applies `output_drop` after its own forward -- the technique
   torch.nn.utils.parametrize uses. The class is made once per base class.
"""
from __future__ import annotations

import types
from functools import lru_cache
from typing import Callable, Optional, Tuple, Type

import torch
import torch.nn as nn


def output_site(root: nn.Module, path: str) -> Tuple[Optional[nn.Module], str, Optional[nn.Module]]:
    """(owner, attribute name, module) of `root`'s submodule at `path` ('' = `root` itself).

    Raises a ValueError naming the block class and the path when `root` has no such slot.
    """
    if not path:
        return None, '', root
    parent, _, name = path.rpartition('.')
    try:
        owner = root.get_submodule(parent)
    except AttributeError:
        owner = None
    if owner is None or not hasattr(owner, name):
        raise ValueError(f'{type(root).__name__} has no submodule {path!r} to put the dropout after')
    return owner, name, getattr(owner, name)


def drop_output_of(root: nn.Module, path: str, p: float) -> nn.Module:
    """Drop the output of `root`'s submodule at `path` ('' = `root`) with rate `p`; return the dropout."""
    owner, name, target = output_site(root, path)

    if target is None or isinstance(target, nn.Identity):
        dropout = nn.Dropout(p)
        setattr(owner, name, dropout)
    elif _is_norm_act(target):
        dropout = drop_output_of(target, 'act', p)
    elif owner is not None and not target.state_dict():
        dropout = nn.Dropout(p)
        setattr(owner, name, nn.Sequential(target, dropout))
    else:
        dropout = _wrap_output(target, p)
    return dropout


def _is_norm_act(module: nn.Module) -> bool:
    """timm's fused norm+act layers: a norm with `drop` and `act` child slots."""
    return isinstance(getattr(module, 'act', None), nn.Module) and isinstance(getattr(module, 'drop', None), nn.Module)


class _OutputDropout:
    """Holds the forward that the generated subclasses use (named `forward` for TorchScript)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_drop(self._forward_without_dropout(x))


def _wrap_output(module: nn.Module, p: float) -> nn.Dropout:
    if 'output_drop' in module._modules:
        raise ValueError(f'{type(module).__name__} already has an output dropout')
    module.__class__ = _output_dropout_class(type(module))
    module.output_drop = nn.Dropout(p)
    return module.output_drop


@lru_cache(maxsize=None)
def _output_dropout_class(base: Type[nn.Module]) -> Type[nn.Module]:
    return subclass_with(base, 'forward', _OutputDropout.forward, '_forward_without_dropout')


def subclass_with(base: type, method: str, override: Callable, base_alias: str) -> type:
    """A subclass of `base` whose `method` is `override`, with `base`'s version kept as `base_alias`.

    `override` calls `self.<base_alias>` instead of super(): TorchScript cannot compile super(),
    and it compiles a called method under the function's own __name__, so the base method is
    re-bound under the alias name.
    """
    original = getattr(base, method)
    alias = types.FunctionType(
        original.__code__, original.__globals__, base_alias, original.__defaults__, original.__closure__)
    alias.__kwdefaults__ = original.__kwdefaults__
    alias.__annotations__ = dict(original.__annotations__)
    return type(f'{base.__name__}DropRes', (base,), {
        method: override,
        base_alias: alias,
        'dropres_base': base,
        '__module__': __name__,
        '__doc__': f'{base.__name__} with dropout added by timm_dropres (state_dict unchanged).',
    })
