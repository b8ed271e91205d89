"""`timm-dropres show` and `timm-dropres list`: where the dropout sits, without reading code.

`print(model)` lists modules in definition order, which is not the order a block runs them (timm's
Bottleneck defines `downsample` last but may call it first; a pre-activation block runs `norm1`
before its shortcut). `execution_order` records what one small forward actually calls, so the
listing shows each dropout between the modules that really precede and follow it.
"""
from __future__ import annotations

import argparse
from typing import Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn
from timm.layers import SelectAdaptivePool2d
from timm.models import split_model_name_tag

from .convert import SETTINGS_ATTR
from .head import POST_POOL_DROPOUT
from .placement import residual_blocks, slots_for
from .settings import BRANCH_DROP_POSITIONS, HEAD_DROP_POSITIONS
from .shift import stage_names, stage_of
from .variants import SUFFIX

Op = Tuple[str, nn.Module]
SHORTCUT_NAMES = ('downsample', 'shortcut')
"""Child names timm's residual blocks give their shortcut projection."""
DROPOUT_MARK, PLAIN_MARK = '>>', '  '


def does_work(module: nn.Module) -> bool:
    """A module that computes something itself: a leaf, or a module with its own parameters (timm's
    BatchNormAct2d normalizes in its own forward and calls its `act` child). Empty slots are skipped."""
    if isinstance(module, nn.Identity):
        return False
    return next(module.children(), None) is None or next(module.parameters(recurse=False), None) is not None


@torch.no_grad()
def execution_order(model: nn.Module, img_size: int = 64) -> List[Op]:
    """(qualified name, module) of every module that does work, in the order one eval forward calls it."""
    calls: List[Op] = []
    handles = [
        module.register_forward_pre_hook(lambda m, args, name=name: calls.append((name, m)))
        for name, module in model.named_modules() if does_work(module)
    ]
    in_chans = (getattr(model, 'pretrained_cfg', None) or {}).get('input_size', (3,))[0]
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, in_chans, img_size, img_size))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return calls


def is_dropout(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.dropout._DropoutNd)


def describe(module: nn.Module) -> str:
    """A short description: 'Conv2d(64->256, 1x1)', 'BatchNorm2d(256)', 'Dropout(p=0.1)', ..."""
    name = type(module).__name__
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = 'x'.join(str(k) for k in module.kernel_size)
        stride = f', stride {module.stride[0]}' if max(module.stride) > 1 else ''
        return f'{name}({module.in_channels}->{module.out_channels}, {kernel}{stride})'
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return f'{name}({module.num_features})'
    if isinstance(module, nn.Linear):
        return f'{name}({module.in_features}->{module.out_features})'
    if is_dropout(module):
        return f'{name}(p={module.p})'
    extra = module.extra_repr()
    return f'{name}({extra})' if extra and len(extra) <= 40 else name


def _line(name: str, module: nn.Module, note: str = '', width: int = 16) -> str:
    mark = DROPOUT_MARK if is_dropout(module) else PLAIN_MARK
    return f'  {mark} {name:<{width}} {describe(module)}{note}'


def _within(name: str, path: str) -> bool:
    return name == path or name.startswith(path + '.')


def block_lines(block_name: str, block: nn.Module, ops: Sequence[Op]) -> List[str]:
    """One block's operations relative to the block, the shortcut and the residual addition marked.

    The addition is no module; it is placed from the block's `after_add` slot (the first module run
    after the sum), or at the end when that slot is the block output itself.
    """
    inner = [(name[len(block_name) + 1:], m) for name, m in ops if name.startswith(block_name + '.')]
    slots = slots_for(block)
    add_at = slots.after_add if slots is not None else None
    width = max([16] + [len(name) for name, _ in inner])
    addition = f"  {PLAIN_MARK} {'(+) shortcut':<{width}} residual addition"
    lines = [f'{block_name}  ({type(block).__name__})']
    for name, module in inner:
        # after_add '' drops the block output: timm_dropres gives the block an `output_drop` child
        if add_at is not None and addition not in lines and (
                _within(name, add_at) if add_at else name == 'output_drop'):
            lines.append(addition)
        note = '  [shortcut]' if name.split('.')[0] in SHORTCUT_NAMES else ''
        lines.append(_line(name, module, note, width))
    if add_at is not None and addition not in lines:
        lines.append(addition)
    return lines


def head_lines(model: nn.Module, ops: Sequence[Op], last_block: Optional[str]) -> List[str]:
    """Everything the forward runs after the last residual block: final norm, dropout, pool, classifier.

    timm's ResNet drops after the pool with a functional call that no hook sees; it is listed from
    the model's post-pool rate (head.POST_POOL_DROPOUT).
    """
    start = 0
    if last_block is not None:
        start = max((i + 1 for i, (name, _) in enumerate(ops) if _within(name, last_block)), default=0)
    head = list(ops[start:])
    width = max([16] + [len(name) for name, _ in head])
    lines = ['head (after the last block)']
    pools = [name for name, m in model.named_modules() if isinstance(m, SelectAdaptivePool2d)]
    functional_rate = _functional_post_pool_rate(model)
    for i, (name, module) in enumerate(head):
        lines.append(_line(name, module, width=width))
        next_name = head[i + 1][0] if i + 1 < len(head) else ''
        in_pool = any(_within(name, pool) for pool in pools)
        if functional_rate and in_pool and not any(_within(next_name, pool) for pool in pools):
            lines.append(f"  {DROPOUT_MARK} {'(functional)':<{width}} F.dropout(p={functional_rate}) in forward_head")
    return lines


def _functional_post_pool_rate(model: nn.Module) -> float:
    """timm's post-pool dropout rate when it is a float attribute (a hidden F.dropout call), else 0."""
    for cls, path in POST_POOL_DROPOUT.items():
        if isinstance(model, cls):
            value = model.get_submodule(path.rpartition('.')[0]) if '.' in path else model
            rate = getattr(value, path.rpartition('.')[2])
            return rate if isinstance(rate, float) else 0.0
    return 0.0


def first_blocks(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The first supported residual block of every stage (timm's feature_info stages, else the parent module)."""
    stages = stage_names(model)
    firsts: Dict[str, Tuple[str, nn.Module]] = {}
    for name, block, _ in residual_blocks(model):
        stage = stage_of(name, stages, seen_stage=True) if stages else name.rpartition('.')[0]
        firsts.setdefault(stage, (name, block))
    return list(firsts.values())


def placement_text(model: nn.Module, model_name: str, img_size: int = 64) -> str:
    """The text `timm-dropres show` prints."""
    settings = getattr(model, SETTINGS_ATTR, None)
    if settings is None:
        header = f'{model_name} ({type(model).__name__}): no timm-dropres dropout (not a *_dropres model)'
    else:
        header = (f"{model_name}: branch_drop_pos='{settings.branch_drop_pos}' (p={settings.branch_drop_rate}), "
                  f"head_drop_pos='{settings.head_drop_pos}' (p={settings.drop_rate})")
    lines = [header, f'the first block of every stage, modules in the order a forward runs them; {DROPOUT_MARK} = dropout']
    ops = execution_order(model, img_size)
    blocks = first_blocks(model)
    for name, block in blocks:
        lines += [''] + block_lines(name, block, ops)
    last_block = None
    for name, _, _ in residual_blocks(model):
        last_block = name
    lines += [''] + head_lines(model, ops, last_block)
    return '\n'.join(lines)


def list_variants(pattern: str = '*' + SUFFIX) -> List[Tuple[str, List[str]]]:
    """(variant name, its pretrained tags) for every registered `*_dropres` model matching `pattern`.

    Tags are those timm.list_pretrained reports, i.e. with weights to download (a base's tags).
    """
    names = [name for name in timm.list_models(pattern) if name.endswith(SUFFIX)]
    tags: Dict[str, List[str]] = {}
    for name_with_tag in timm.list_pretrained([f'{name}.*' for name in names]) if names else []:
        name, tag = split_model_name_tag(name_with_tag)
        tags.setdefault(name, []).append(tag)
    return [(name, tags.get(name, [])) for name in names]


def add_command(subparsers: argparse._SubParsersAction) -> None:
    show = subparsers.add_parser(
        'show', help="print each stage's first block and the head with every dropout marked",
        description="Print the first residual block of every stage and the head, modules in the order "
                    "one forward runs them, with each dropout marked '>>'.")
    show.add_argument('model', help='timm model name, e.g. resnet50_dropres')
    show.add_argument('--branch-drop-pos', choices=BRANCH_DROP_POSITIONS, default=None)
    show.add_argument('--head-drop-pos', choices=HEAD_DROP_POSITIONS, default=None)
    show.add_argument('--branch-drop-rate', type=float, default=None)
    show.add_argument('--drop-rate', type=float, default=None)
    show.set_defaults(handler=run_show)

    lister = subparsers.add_parser(
        'list', help='registered *_dropres variants and their pretrained tags',
        description='List the registered *_dropres variants matching a timm-style wildcard, with the '
                    "pretrained tags each offers (its base model's weights).")
    lister.add_argument('pattern', nargs='?', default='*' + SUFFIX,
                        help=f"wildcard as in timm.list_models, e.g. 'resnet50*' (default '*{SUFFIX}')")
    lister.set_defaults(handler=run_list)


def run_show(args: argparse.Namespace) -> int:
    kwargs = {k: getattr(args, k) for k in ('branch_drop_pos', 'head_drop_pos', 'branch_drop_rate', 'drop_rate')
              if getattr(args, k) is not None}
    if not timm.is_model(args.model):
        raise SystemExit(f"timm-dropres show: unknown model {args.model!r}; 'timm-dropres list' shows the variants")
    if kwargs and not split_model_name_tag(args.model)[0].endswith(SUFFIX):
        raise SystemExit(f'timm-dropres show: --{next(iter(kwargs)).replace("_", "-")} needs a *{SUFFIX} model, '
                         f'got {args.model!r}')
    try:
        model = timm.create_model(args.model, **kwargs)
    except ValueError as e:
        raise SystemExit(f'timm-dropres show: {e}')
    print(placement_text(model, args.model))
    return 0


def run_list(args: argparse.Namespace) -> int:
    variants = list_variants(args.pattern)
    if not variants:
        print(f'no *{SUFFIX} variant matches {args.pattern!r}')
        return 1
    width = max(len(name) for name, _ in variants)
    for name, tags in variants:
        print(f"{name:<{width}}  {', '.join(tags) if tags else '(no pretrained weights)'}")
    print(f'{len(variants)} variants, {sum(len(t) for _, t in variants)} pretrained tags')
    return 0
