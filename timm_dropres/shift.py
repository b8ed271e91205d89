"""Variance-shift diagnostic: how much each dropout position changes activations at inference.

Dropout scales activations' variance differently in training and at inference (Li et al. 2019,
"variance shift"). A batch norm that learned its running statistics under dropout then normalizes
inference activations with the wrong variance. Kim et al. (UAI 2023) place the branch dropout where
no batch norm sees it directly and the residual addition dilutes it; this module measures that on
a real model.

`variance_shift` runs the same inputs twice with batch norms on their running statistics: once with
dropout on ("train") and once off ("eval"), and reports Var_eval / Var_train at every batch-norm
input, every residual block output and the logits (1 = no shift), plus how much the logits move.
`recalibrate_batch_norm` first gives the batch norms the running statistics that training with
dropout would give them. `compare_positions` does both for several placements of one model with
identical weights; `timm-dropres shift MODEL` prints it per stage.
"""
from __future__ import annotations

import argparse
import copy
import inspect
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn
from timm.data import create_dataset, create_transform, resolve_data_config

from .convert import SETTINGS_ATTR, apply
from .placement import residual_blocks
from .records import machine_info, write_atomically, write_json
from .settings import BRANCH_DROP_POSITIONS, HEAD_DROP_POSITIONS, DropResSettings

BN_INPUT, BLOCK_OUTPUT, LOGITS = 'bn_input', 'block_output', 'logits'


@dataclass
class SiteShift:
    """One measured tensor: the channel-pooled variance with dropout on (train) and off (eval)."""

    name: str
    kind: str  # BN_INPUT, BLOCK_OUTPUT or LOGITS
    stage: str
    var_train: float
    var_eval: float

    @property
    def ratio(self) -> float:
        """Var_eval / Var_train: 1 means no shift; below 1, inference activations are narrower."""
        return self.var_eval / self.var_train if self.var_train > 0 else float('nan')


@dataclass
class ShiftReport:
    """The variance shift of one model, with how far dropout moves its logits."""

    sites: List[SiteShift]
    logit_abs_change: float  # mean |logits(dropout on) - logits(dropout off)|
    logit_abs_mean: float  # mean |logits(dropout off)|, the scale of that change
    argmax_changed: float  # fraction of samples whose top-1 class differs between the two
    samples: int

    def of_kind(self, kind: str) -> List[SiteShift]:
        return [s for s in self.sites if s.kind == kind]

    @property
    def logits(self) -> SiteShift:
        return self.of_kind(LOGITS)[0]

    def as_dict(self) -> Dict[str, object]:
        out = asdict(self)
        for site, d in zip(self.sites, out['sites']):
            d['ratio'] = site.ratio
        return out


class _ChannelMoments:
    """Per-channel mean and variance over every dim but 1 (the channel dim, as batch norm has it),
    merged across batches with Chan et al.'s pairwise update (stable when the mean dwarfs the spread)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Optional[torch.Tensor] = None
        self.sq_dev: Optional[torch.Tensor] = None  # sum of squared deviations from the mean

    def add(self, x: torch.Tensor) -> None:
        dims = [d for d in range(x.ndim) if d != 1]
        x = x.detach()
        n = x.numel() // x.shape[1]
        # sums in the input's precision (twice as fast as var_mean on CPU), the rest in float64
        mean = x.sum(dims).double() / n
        sq_dev = ((x * x).sum(dims).double() / n - mean * mean).clamp_min(0) * n
        if self.mean is None:
            self.count, self.mean, self.sq_dev = n, mean, sq_dev
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.sq_dev = self.sq_dev + sq_dev + delta * delta * (self.count * n / total)
        self.count = total

    def pooled_variance(self) -> float:
        """Mean over channels of each channel's variance."""
        return (self.sq_dev / self.count).mean().item()


def is_batch_norm(module: nn.Module) -> bool:
    """Batch norms with running statistics (timm's BatchNormAct2d is a BatchNorm2d)."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats


@contextmanager
def modes_restored(model: nn.Module) -> Iterator[None]:
    """Give every submodule its own train/eval flag back on exit (`model.train(flag)` would set all alike)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def dropout_on_running_stats(model: nn.Module) -> Iterator[None]:
    """Train mode with every batch norm in eval: dropout (module or functional) acts, BN uses running stats.

    Only each batch norm's own flag is cleared: `.eval()` would recurse into children, and timm's
    BatchNormAct2d holds its activation, with the guideline dropout of pre-activation blocks, as one.
    """
    with modes_restored(model):
        model.train()
        for m in model.modules():
            if is_batch_norm(m):
                m.training = False
        yield


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every batch norm's running statistics by their average over `batches` in train mode.

    Dropout is on, as in training, so the statistics are the ones a batch norm would learn under
    this dropout placement. momentum=None makes it an equal-weight average instead of an EMA.
    Returns the number of batches used.
    """
    norms = [m for m in model.modules() if is_batch_norm(m)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    used = 0
    try:
        with modes_restored(model):
            model.train()
            for x in batches:
                model(x)
                used += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
    if used == 0:
        raise ValueError('recalibrate_batch_norm needs at least one batch')
    return used


def stage_names(model: nn.Module) -> List[str]:
    """Module names of the model's feature stages (timm's feature_info), used to group sites."""
    return [info['module'] for info in getattr(model, 'feature_info', None) or [] if 'module' in info]


def stage_of(name: str, stages: Sequence[str], seen_stage: bool) -> str:
    """The stage holding module `name`; outside every stage: 'stem' before the first, else 'head'."""
    for stage in stages:
        if name == stage or name.startswith(stage + '.'):
            return stage
    return 'head' if seen_stage else 'stem'


@torch.no_grad()
def variance_shift(
        model: nn.Module,
        batches: Iterable[torch.Tensor],
        calibration: Optional[Iterable[torch.Tensor]] = None,
) -> ShiftReport:
    """Measure Var_eval / Var_train at every BN input, residual block output and the logits.

    Each batch runs twice with batch norms on their running statistics: dropout on, then off. If
    `calibration` batches are given, `recalibrate_batch_norm` runs on them first (and changes the
    model's running statistics); otherwise the model's own statistics are used.
    Variances are per channel over all other dims, averaged over channels.
    """
    if calibration is not None:
        recalibrate_batch_norm(model, calibration)
    sites: Dict[str, Tuple[str, nn.Module]] = {}
    for name, module in model.named_modules():
        if is_batch_norm(module):
            sites[name] = (BN_INPUT, module)
    for name, module, _ in residual_blocks(model):
        sites[name] = (BLOCK_OUTPUT, module)

    order: List[Tuple[str, str]] = []  # (kind, name) in execution order, from the first pass
    moments: Dict[str, Dict[Tuple[str, str], _ChannelMoments]] = {'train': {}, 'eval': {}}
    current = {'pass': 'train'}

    def record(kind: str, name: str, x: torch.Tensor) -> None:
        store = moments[current['pass']]
        key = (kind, name)
        if key not in store:
            store[key] = _ChannelMoments()
            if current['pass'] == 'train':
                order.append(key)
        store[key].add(x)

    def hook_for(kind: str, name: str) -> Callable:
        if kind == BN_INPUT:
            return lambda module, args: record(kind, name, args[0])
        return lambda module, args, output: record(kind, name, output)

    handles = [
        module.register_forward_pre_hook(hook_for(kind, name)) if kind == BN_INPUT
        else module.register_forward_hook(hook_for(kind, name))
        for name, (kind, module) in sites.items()
    ]
    abs_change = abs_eval = changed = 0.0
    samples = 0
    try:
        with modes_restored(model):
            for x in batches:
                current['pass'] = 'train'
                with dropout_on_running_stats(model):
                    logits_train = model(x)
                current['pass'] = 'eval'
                model.eval()
                logits_eval = model(x)
                for pass_name, logits in (('train', logits_train), ('eval', logits_eval)):
                    current['pass'] = pass_name
                    record(LOGITS, 'logits', logits)
                abs_change += (logits_train - logits_eval).abs().mean(1).sum().item()
                abs_eval += logits_eval.abs().mean(1).sum().item()
                changed += (logits_train.argmax(1) != logits_eval.argmax(1)).sum().item()
                samples += x.shape[0]
    finally:
        for handle in handles:
            handle.remove()
    if samples == 0:
        raise ValueError('variance_shift needs at least one batch')

    stages = stage_names(model)
    report_sites, seen_stage = [], False
    for kind, name in order:
        stage = 'logits' if kind == LOGITS else stage_of(name, stages, seen_stage)
        seen_stage = seen_stage or stage in stages
        report_sites.append(SiteShift(
            name, kind, stage,
            var_train=moments['train'][(kind, name)].pooled_variance(),
            var_eval=moments['eval'][(kind, name)].pooled_variance(),
        ))
    return ShiftReport(report_sites, abs_change / samples, abs_eval / samples, changed / samples, samples)


@dataclass(frozen=True)
class Placement:
    """One dropout placement to compare: the branch position and the head position."""

    branch_drop_pos: str
    head_drop_pos: str

    @property
    def label(self) -> str:
        return f"{self.branch_drop_pos}/{self.head_drop_pos.replace('_pool', '')}"


def one_at_a_time(branch_positions: Sequence[str], head_positions: Sequence[str]) -> List[Placement]:
    """Every branch position with the first head position, then every other head position with
    the first branch position: each factor varies alone, and the head only moves the logits."""
    placements = [Placement(b, head_positions[0]) for b in dict.fromkeys(branch_positions)]
    placements += [Placement(branch_positions[0], h) for h in dict.fromkeys(head_positions[1:]) if h != head_positions[0]]
    return placements


def position_models(
        model_name: str,
        placements: Sequence[Placement],
        branch_drop_rate: float = DropResSettings.branch_drop_rate,
        drop_rate: float = DropResSettings.drop_rate,
        pretrained: bool = False,
        checkpoint: Optional[str] = None,
        live_branches: bool = True,
        **model_kwargs,
) -> Dict[Placement, nn.Module]:
    """One model per placement, all with the same weights.

    Placements do not change parameter names, so one state_dict loads into each. A `*_dropres`
    variant is rebuilt with each placement's kwargs; any other timm model is copied and `apply`-ed.
    With random weights and `live_branches`, a model that takes `zero_init_last` is built with it
    off: zero-initialised last norms silence every residual branch, and with it the branch dropout.
    """
    DropResSettings(branch_drop_rate, drop_rate)  # fail early on bad rates
    reference = timm.create_model(model_name, pretrained=pretrained, **model_kwargs)
    random_init = not pretrained and checkpoint is None
    if random_init and live_branches and 'zero_init_last' in inspect.signature(type(reference)).parameters:
        model_kwargs = {'zero_init_last': False, **model_kwargs}
        reference = timm.create_model(model_name, pretrained=False, **model_kwargs)
    if checkpoint is not None:
        timm.models.load_checkpoint(reference, checkpoint)
    state = reference.state_dict()
    is_variant = getattr(reference, SETTINGS_ATTR, None) is not None

    models = {}
    for placement in placements:
        kwargs = dict(branch_drop_rate=branch_drop_rate, drop_rate=drop_rate, **asdict(placement))
        if is_variant:
            model = timm.create_model(model_name, **kwargs, **model_kwargs)
            model.load_state_dict(state)
        else:
            model = apply(copy.deepcopy(reference), **kwargs)
        models[placement] = model.eval()
    return models


@dataclass
class InputBatches:
    """Batches for calibration and measurement, with a description printed beside the numbers."""

    calibration: List[torch.Tensor]
    measurement: List[torch.Tensor]
    description: str
    real_images: bool = field(default=True)


def random_batches(input_size: Sequence[int], batch_size: int, calibration: int, measurement: int,
                   seed: int = 0) -> InputBatches:
    """N(0, 1) batches: no data needed, but no image statistics either, and labelled as such."""
    gen = torch.Generator().manual_seed(seed)
    batches = [torch.randn(batch_size, *input_size, generator=gen) for _ in range(calibration + measurement)]
    return InputBatches(
        batches[:calibration], batches[calibration:],
        f'RANDOM N(0,1) inputs of shape {tuple(input_size)} (no real images)', real_images=False)


def image_folder_batches(root: Path, data_config: Dict, batch_size: int, calibration: int, measurement: int,
                         seed: int = 0, label: str = '') -> InputBatches:
    """Shuffled batches from an ImageFolder tree (its val/validation split if it has one), transformed
    the way timm evaluates the model. Calibration and measurement use different images."""
    dataset = create_dataset('', root=str(root), split='validation', transform=create_transform(**data_config))
    needed = batch_size * (calibration + measurement)
    if len(dataset) < needed:
        raise ValueError(
            f'--data {root} has {len(dataset)} images; --batch-size {batch_size} x '
            f'({calibration} calibration + {measurement} measured batches) needs {needed}')
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed))
    batches = []
    for images, _ in loader:
        batches.append(images)
        if len(batches) == calibration + measurement:
            break
    return InputBatches(
        batches[:calibration], batches[calibration:],
        f'{label or root}: {needed} of {len(dataset)} images at {tuple(data_config["input_size"])}')


def elpv_root() -> Optional[Path]:
    """The elpv-dataset as an ImageFolder tree when the dataset package is installed, else None."""
    try:
        from .datasets import elpv_available, elpv_image_folder
    except ModuleNotFoundError as e:
        if e.name != f'{__package__}.datasets':
            raise
        return None
    return elpv_image_folder() if elpv_available() else None


def compare_positions(
        models: Dict[Placement, nn.Module], data: InputBatches, seed: int = 0) -> Dict[Placement, ShiftReport]:
    """`variance_shift` of every model, each recalibrated on the same batches under its own dropout.

    Seeds torch's global generator (which nn.Dropout draws from) with `seed` before each model.
    """
    reports = {}
    for placement, model in models.items():
        torch.manual_seed(seed)
        reports[placement] = variance_shift(model, data.measurement, calibration=data.calibration)
    return reports


def _stage_summary(sites: Sequence[SiteShift]) -> Dict[str, Tuple[float, float]]:
    """stage -> (mean, min) of the sites' ratios, stages in execution order."""
    grouped: Dict[str, List[float]] = {}
    for site in sites:
        grouped.setdefault(site.stage, []).append(site.ratio)
    return {stage: (sum(r) / len(r), min(r)) for stage, r in grouped.items()}


def format_table(reports: Dict[Placement, ShiftReport]) -> str:
    """Per stage and placement: mean (min) of Var_eval/Var_train over BN inputs and block outputs."""
    placements = list(reports)
    width = max(13, *(len(p.label) for p in placements)) + 2
    header = f"{'':<14}" + ''.join(f'{p.label:>{width}}' for p in placements)
    lines = []
    for kind, title in ((BN_INPUT, 'BN inputs'), (BLOCK_OUTPUT, 'block outputs')):
        summaries = {p: _stage_summary(r.of_kind(kind)) for p, r in reports.items()}
        stages = list(dict.fromkeys(s for summary in summaries.values() for s in summary))
        if not stages:
            continue
        lines += ['', f'{title}: Var_eval/Var_train, mean (min) over the stage', header]
        for stage in stages:
            cells = ''.join(
                f"{'%.3f (%.3f)' % summaries[p][stage]:>{width}}" if stage in summaries[p] else f"{'-':>{width}}"
                for p in placements)
            lines.append(f'{stage:<14}{cells}')
    lines += ['', 'logits', header]
    lines.append(f"{'Var ratio':<14}" + ''.join(f'{r.logits.ratio:>{width}.3f}' for r in reports.values()))
    lines.append(f"{'mean |dlogit|':<14}" + ''.join(
        f"{'%.4f (%.1f%%)' % (r.logit_abs_change, 100 * r.logit_abs_change / r.logit_abs_mean):>{width}}"
        for r in reports.values()))
    lines.append(f"{'top-1 changed':<14}" + ''.join(f'{100 * r.argmax_changed:>{width - 1}.1f}%' for r in reports.values()))
    return '\n'.join(lines)


def plot_reports(reports: Dict[Placement, ShiftReport], title: str, path: Path) -> None:
    """Ratio per BN input and per block output in execution order, one line per placement."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(11, 7))
    for ax, kind, what in ((axes[0], BN_INPUT, 'batch-norm input'), (axes[1], BLOCK_OUTPUT, 'residual block output')):
        for placement, report in reports.items():
            sites = report.of_kind(kind)
            ax.plot(range(len(sites)), [s.ratio for s in sites], '.-', label=(
                f'{placement.label}: logits {report.logits.ratio:.3f}, '
                f'|dlogit| {100 * report.logit_abs_change / report.logit_abs_mean:.1f}%'))
        sites = next(iter(reports.values())).of_kind(kind)
        for i, site in enumerate(sites):
            if i and site.stage != sites[i - 1].stage:
                ax.axvline(i - 0.5, color='grey', lw=0.6)
                ax.text(i - 0.4, ax.get_ylim()[0], site.stage, fontsize=7, va='bottom', color='grey')
        ax.axhline(1.0, color='black', lw=0.6)
        ax.set(xlabel=f'{what} (execution order)', ylabel='Var_eval / Var_train')
        ax.grid(alpha=0.3)
    axes[0].set_title(title, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format='png'))
    plt.close(fig)


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'shift', help='measure the variance shift of dropout placements on a model',
        description='Recalibrate batch norms under dropout, then report Var_eval/Var_train at every '
                    'batch-norm input, residual block output and the logits, per dropout placement '
                    '(1 = no shift). Placements vary one at a time and share one set of weights.')
    parser.add_argument('model', help='timm model name, e.g. resnet50_dropres (or any base model with a supported residual block)')
    parser.add_argument('--branch-drop-pos', nargs='+', choices=BRANCH_DROP_POSITIONS, default=list(BRANCH_DROP_POSITIONS),
                        help='branch positions to compare, each with the first --head-drop-pos (default: all)')
    parser.add_argument('--head-drop-pos', nargs='+', choices=HEAD_DROP_POSITIONS, default=list(HEAD_DROP_POSITIONS),
                        help='head positions to compare, each with the first --branch-drop-pos (default: all)')
    parser.add_argument('--branch-drop-rate', type=float, default=DropResSettings.branch_drop_rate)
    parser.add_argument('--drop-rate', type=float, default=DropResSettings.drop_rate)
    parser.add_argument('--data', default='auto', help="'auto' (elpv-dataset if installed, else random), "
                        "'elpv', 'random', or the path of an ImageFolder tree")
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--calibration-batches', type=int, default=4, help='batches that set the BN running statistics')
    parser.add_argument('--batches', type=int, default=2, help='batches measured')
    parser.add_argument('--img-size', type=int, default=None, help="input size (default: the model's)")
    parser.add_argument('--pretrained', action='store_true', help="timm's pretrained weights (needs them cached or the Hub)")
    parser.add_argument('--checkpoint', default=None, help='weights to load (timm.models.load_checkpoint)')
    parser.add_argument('--zero-init-last', action='store_true',
                        help="keep timm's zero-initialised last norms with random weights (silences every branch)")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', type=Path, default=None, help='write every site\'s numbers here')
    parser.add_argument('--plot', type=Path, default=None, help='write a PNG here (needs matplotlib)')
    parser.set_defaults(handler=run_shift)


def _input_batches(args: argparse.Namespace, model: nn.Module) -> InputBatches:
    data_config = resolve_data_config(
        args={'img_size': args.img_size} if args.img_size else {}, model=model)
    counts = dict(batch_size=args.batch_size, calibration=args.calibration_batches,
                  measurement=args.batches, seed=args.seed)
    if args.data == 'random':
        return random_batches(data_config['input_size'], **counts)
    if args.data in ('auto', 'elpv'):
        root = elpv_root()
        if root is not None:
            return image_folder_batches(root, data_config, label='elpv-dataset', **counts)
        if args.data == 'elpv':
            raise ValueError("--data elpv needs the elpv-dataset package: pip install 'timm-dropres[bench]'")
        return random_batches(data_config['input_size'], **counts)
    root = Path(args.data)
    if not root.is_dir():
        raise ValueError(f"--data must be 'auto', 'elpv', 'random' or an ImageFolder directory; {args.data!r} is none")
    return image_folder_batches(root, data_config, **counts)


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces `args`, every option spelled out."""
    parts = ['timm-dropres shift', args.model,
             '--branch-drop-pos', *args.branch_drop_pos, '--head-drop-pos', *args.head_drop_pos]
    for name in ('branch_drop_rate', 'drop_rate', 'data', 'batch_size', 'calibration_batches', 'batches',
                 'img_size', 'checkpoint', 'seed', 'json', 'plot'):
        value = getattr(args, name)
        if value is not None:
            parts += [f"--{name.replace('_', '-')}", str(value)]
    parts += [f"--{name.replace('_', '-')}" for name in ('pretrained', 'zero_init_last') if getattr(args, name)]
    return ' '.join(parts)


def run_shift(args: argparse.Namespace) -> int:
    if ':' not in args.model and not timm.is_model(args.model):  # hf-hub:/local-dir: names resolve in timm
        raise SystemExit(f"timm-dropres shift: unknown model {args.model!r}; 'timm-dropres list' shows the variants")
    for name in ('batch_size', 'calibration_batches', 'batches', 'img_size'):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"timm-dropres shift: --{name.replace('_', '-')} must be at least 1, got {value}")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit("timm-dropres shift: --plot needs matplotlib: pip install 'timm-dropres[bench]'")
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    placements = one_at_a_time(args.branch_drop_pos, args.head_drop_pos)
    try:
        models = position_models(
            args.model, placements, args.branch_drop_rate, args.drop_rate, pretrained=args.pretrained,
            checkpoint=args.checkpoint, live_branches=not args.zero_init_last)
        data = _input_batches(args, next(iter(models.values())))
    except ValueError as e:
        raise SystemExit(f'timm-dropres shift: {e}')
    reports = compare_positions(models, data, seed=args.seed)
    seconds = time.perf_counter() - start

    weights = ('pretrained' if args.pretrained else f'checkpoint {args.checkpoint}' if args.checkpoint
               else f"random init (seed {args.seed}{'' if args.zero_init_last else ', last norms not zeroed'})")
    title = (f'{args.model}: branch p={args.branch_drop_rate}, head p={args.drop_rate}; '
             f'BN running stats from {args.calibration_batches}x{args.batch_size} images under dropout')
    print(title)
    print(f'data: {data.description}')
    print(f'weights: {weights}')
    print(format_table(reports))
    print(f'\n{seconds:.1f} s, {torch.get_num_threads()} threads')

    if args.json is not None:
        record = {
            'command': command_line(args),
            'machine': machine_info(),
            'seconds': round(seconds, 1),
            'model': args.model,
            'weights': weights,
            'data': data.description,
            'real_images': data.real_images,
            'branch_drop_rate': args.branch_drop_rate,
            'drop_rate': args.drop_rate,
            'placements': [{**asdict(p), **r.as_dict()} for p, r in reports.items()],
        }
        write_json(args.json, record)
        print(f'wrote {args.json}')
    if args.plot is not None:
        plot_reports(reports, f'{title}\ndata: {data.description}; weights: {weights}', args.plot)
        print(f'wrote {args.plot}')
    return 0
