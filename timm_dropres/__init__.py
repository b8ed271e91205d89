"""timm-dropres: the residual-network dropout rule of Kim et al. (UAI 2023) for timm models.

Importing the package registers a `<base>_dropres` variant of each supported timm model.
"""
from .convert import apply
from .placement import BLOCK_SLOTS
from .settings import BRANCH_DROP_POSITIONS, HEAD_DROP_POSITIONS, DropResSettings
from .variants import register_variants

__version__ = '0.1.0'
__all__ = [
    'apply', 'register_variants', 'DropResSettings', 'BLOCK_SLOTS',
    'BRANCH_DROP_POSITIONS', 'HEAD_DROP_POSITIONS', '__version__',
]

register_variants()
