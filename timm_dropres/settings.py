"""The four dropres arguments, validated once so every entry point fails the same way.

`create_model(...)`, `apply(...)` and a Hub `config.json` all take the same names; this module owns
their accepted values and their defaults for the registered `*_dropres` variants.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from numbers import Real
from typing import Any, Dict

BRANCH_DROP_POSITIONS = ('guideline', 'branch_end', 'after_add', 'before_norm')
"""Where the residual-branch dropout goes (see `placement.py` for each block's slot):
'guideline' after the branch's last BN(+act) and before its last conv (the paper's rule);
'branch_end' at the end of the branch, right before the addition; 'after_add' after the addition
and its activation; 'before_norm' directly before the branch's last BN (the variance-shift case)."""

HEAD_DROP_POSITIONS = ('pre_pool', 'post_pool')
"""'pre_pool' drops the final feature map before global pooling (the paper's rule);
'post_pool' is timm's usual dropout on the pooled features."""


def check_rate(name: str, value: Any) -> float:
    """Return `value` as a float dropout probability in [0, 1), or raise naming the argument."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or not 0 <= value < 1:
        raise ValueError(f'{name} must be a number in [0, 1) (0 adds no dropout), got {value!r}')
    return float(value)


def check_position(name: str, value: Any, accepted: tuple) -> str:
    """Return `value` if it is one of `accepted`, or raise naming the argument and the choices."""
    if value not in accepted:
        choices = ', '.join(repr(a) for a in accepted)
        raise ValueError(f'{name} must be one of {choices}, got {value!r}')
    return value


@dataclass(frozen=True)
class DropResSettings:
    """The dropout settings of one model, with the variants' defaults."""

    branch_drop_rate: float = 0.1
    drop_rate: float = 0.2
    branch_drop_pos: str = 'guideline'
    head_drop_pos: str = 'pre_pool'

    def __post_init__(self) -> None:
        # frozen: write the normalised values through object.__setattr__
        object.__setattr__(self, 'branch_drop_rate', check_rate('branch_drop_rate', self.branch_drop_rate))
        object.__setattr__(self, 'drop_rate', check_rate('drop_rate', self.drop_rate))
        check_position('branch_drop_pos', self.branch_drop_pos, BRANCH_DROP_POSITIONS)
        check_position('head_drop_pos', self.head_drop_pos, HEAD_DROP_POSITIONS)

    def as_kwargs(self) -> Dict[str, Any]:
        """The settings as the keyword arguments that rebuild them."""
        return asdict(self)
