"""Does the dropout rule pay? One architecture trained under each dropout setting, several seeds.

Settings (rates from --branch-drop-rate / --drop-rate):
    none          no dropout at all
    post_pool     timm's own head dropout, after the global pool
    pre_pool      head dropout before the pool (the paper's head rule), no branch dropout
    guideline     branch dropout at the guideline slot + pre-pool head (the full rule)
    branch_end    branch dropout at the end of the branch (before the add)  + pre-pool head
    after_add     dropout after the addition and its activation             + pre-pool head
    before_norm   branch dropout between the last conv and its BN           + pre-pool head

Default: elpv (2,624 solar-cell images, 4 defect classes; `pip install timm-dropres[bench]`) at
64 px, resnet18 at half width, grayscale input, 5 epochs, seeds 0 1 2: about 10 minutes on 2 idle
CPU cores. Every seed starts all settings from the same initial weights and sees the same data
order, so the paired difference to 'none' is reported beside mean +- std. The metrics are those
of the final epoch (no best-epoch picking on the validation split, which would bias upwards).

Everything but the loop is timm's: create_dataset/create_loader (data and augmentation),
create_model (the `*_dropres` variants), create_optimizer_v2, create_scheduler_v2 and its loss.

    python benchmarks/accuracy.py                       # the default study (~10 min, 2 cores)
    python benchmarks/accuracy.py --data PATH           # any ImageFolder with train/ and val/
    python benchmarks/accuracy.py --device cuda --amp --model resnet50 --model-kwargs --epochs 30
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import torch
import torch.nn as nn
from timm import create_model
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_dataset, create_loader
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ParseKwargs, random_seed

import timm_dropres
from timm_dropres.datasets import elpv_image_folder

from _common import RESULTS_DIR, machine_info, markdown_table, write_results

SETTINGS = ('none', 'post_pool', 'pre_pool', 'guideline', 'branch_end', 'after_add', 'before_norm')
BASELINE = 'none'
HALF_WIDTH_RESNET18 = {'channels': (32, 64, 128, 256), 'stem_width': 32}


def dropout_kwargs(setting: str, branch_drop_rate: float, drop_rate: float) -> Dict[str, Any]:
    """The `*_dropres` create_model kwargs of one setting."""
    if setting == 'none':
        return dict(branch_drop_rate=0.0, drop_rate=0.0)
    if setting in ('post_pool', 'pre_pool'):
        return dict(branch_drop_rate=0.0, drop_rate=drop_rate, head_drop_pos=setting)
    return dict(branch_drop_rate=branch_drop_rate, drop_rate=drop_rate, branch_drop_pos=setting,
                head_drop_pos='pre_pool')


def variant_name(model: str) -> str:
    name = model if model.endswith('_dropres') else model + '_dropres'
    if name not in timm_dropres.register_variants():
        raise SystemExit(f'--model {model!r}: no timm_dropres variant; one of timm.list_models("*_dropres"), '
                         f'with or without the suffix')
    return name


def balanced_accuracy(confusion: np.ndarray) -> float:
    """Mean per-class recall over the classes present in the targets (rows of `confusion`)."""
    support = confusion.sum(axis=1)
    present = support > 0
    return float((np.diag(confusion)[present] / support[present]).mean())


def build_loaders(args, device: torch.device):
    """timm datasets + loaders for the train and val folders of the ImageFolder root."""
    root = Path(args.data) if args.data else elpv_image_folder(val_fraction=args.val_fraction, seed=args.split_seed)
    for split in (args.train_split, args.val_split):
        if not (root / split).is_dir():
            raise SystemExit(f'--data {str(root)!r}: expected an ImageFolder with a {split!r} sub-folder '
                             f'(see --train-split / --val-split)')
    img_mode = 'L' if args.in_chans == 1 else 'RGB'
    train_set = create_dataset('', root=str(root / args.train_split), is_training=True, input_img_mode=img_mode)
    val_set = create_dataset('', root=str(root / args.val_split), input_img_mode=img_mode)
    if train_set.reader.class_to_idx != val_set.reader.class_to_idx:
        raise SystemExit(f'--data {str(root)!r}: train and val have different class folders')
    mean, std = normalization(args)
    common = dict(input_size=(args.in_chans, args.img_size, args.img_size), batch_size=args.batch_size,
                  use_prefetcher=False, mean=mean, std=std, num_workers=args.workers, device=device,
                  pin_memory=device.type == 'cuda', interpolation='bilinear')

    def train_loader():
        # made per run: the worker seeds derive from torch's RNG, so each run gets its seed's data order
        return create_loader(train_set, is_training=True, scale=(args.scale_min, 1.0), hflip=0.5,
                             vflip=args.vflip, color_jitter=0.0, persistent_workers=False, **common)

    val_loader = create_loader(val_set, is_training=False, crop_pct=1.0, persistent_workers=False, **common)
    return root, train_set.reader.class_to_idx, train_loader, val_loader


def normalization(args):
    """ImageNet mean/std, averaged over channels for grayscale input (as timm adapts a first conv)."""
    if args.in_chans == 3:
        return IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    return (sum(IMAGENET_DEFAULT_MEAN) / 3,) * args.in_chans, (sum(IMAGENET_DEFAULT_STD) / 3,) * args.in_chans


def train_one(args, setting: str, seed: int, num_classes: int, train_loader_fn, val_loader, device, progress):
    random_seed(seed)
    model = create_model(
        variant_name(args.model), num_classes=num_classes, in_chans=args.in_chans,
        **args.model_kwargs, **dropout_kwargs(setting, args.branch_drop_rate, args.drop_rate))
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    train_loader = train_loader_fn()
    optimizer = create_optimizer_v2(model, args.opt, lr=args.lr, weight_decay=args.weight_decay)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, args.sched, num_epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        warmup_lr=args.lr * 0.01, step_on_epochs=False, updates_per_epoch=len(train_loader))
    loss_fn = LabelSmoothingCrossEntropy(args.smoothing) if args.smoothing > 0 else nn.CrossEntropyLoss()
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if args.amp else nullcontext()

    start, start_cpu = time.perf_counter(), time.process_time()
    updates = 0
    for epoch in range(num_epochs):
        model.train()
        losses = []
        for images, targets in train_loader:
            images, targets = _to(images, device, args.channels_last), targets.to(device)
            with amp:
                loss = loss_fn(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            updates += 1
            scheduler.step_update(updates)
            losses.append(loss.item())
            progress.set_postfix(setting=setting, seed=seed, epoch=epoch, loss=f'{losses[-1]:.3f}', refresh=False)
            progress.update()
        scheduler.step(epoch + 1)
    train_seconds, train_cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu

    confusion = evaluate(model, val_loader, num_classes, device, args)
    return {
        'setting': setting, 'seed': seed,
        'top1': 100 * float(np.trace(confusion) / confusion.sum()),
        'balanced_acc': 100 * balanced_accuracy(confusion),
        'final_train_loss': float(np.mean(losses)),
        'train_seconds': train_seconds,
        'train_cpu_seconds': train_cpu_seconds,  # this process only (not the loader worker)
        'confusion': confusion.tolist(),
        'dropres_settings': model.dropres_settings.as_kwargs(),
    }


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, device, args) -> np.ndarray:
    model.eval()
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if args.amp else nullcontext()
    for images, targets in loader:
        with amp:
            predicted = model(_to(images, device, args.channels_last)).argmax(dim=1).cpu()
        np.add.at(confusion, (targets.numpy(), predicted.numpy()), 1)
    return confusion


def _to(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def summarize(runs: List[Dict[str, Any]], settings: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Per setting: mean and std over seeds, and the paired difference to 'none' (same seed)."""
    by_key = {(r['setting'], r['seed']): r for r in runs}
    seeds = sorted({r['seed'] for r in runs})
    summary = {}
    for setting in settings:
        row = {}
        for metric in ('top1', 'balanced_acc'):
            values = [by_key[setting, s][metric] for s in seeds]
            row[metric] = statistics.mean(values)
            row[f'{metric}_std'] = statistics.stdev(values) if len(values) > 1 else 0.0
            if BASELINE in settings:
                diffs = [by_key[setting, s][metric] - by_key[BASELINE, s][metric] for s in seeds]
                row[f'{metric}_vs_none'] = statistics.mean(diffs)
                row[f'{metric}_vs_none_std'] = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        summary[setting] = row
    return summary


def results_table(summary: Dict[str, Dict[str, float]]) -> str:
    header = ['setting', 'top-1 (%)', 'balanced acc. (%)']
    paired = all('top1_vs_none' in row for row in summary.values())
    if paired:
        header += ['top-1 vs none', 'bal. acc. vs none']
    rows = []
    for setting, row in summary.items():
        cells = [setting, f"{row['top1']:.1f} ± {row['top1_std']:.1f}",
                 f"{row['balanced_acc']:.1f} ± {row['balanced_acc_std']:.1f}"]
        if paired:
            cells += [f"{row['top1_vs_none']:+.1f} ± {row['top1_vs_none_std']:.1f}",
                      f"{row['balanced_acc_vs_none']:+.1f} ± {row['balanced_acc_vs_none_std']:.1f}"]
        rows.append(cells)
    return markdown_table(header, rows)


def plot(runs: List[Dict[str, Any]], summary: Dict[str, Dict[str, float]], title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    settings = list(summary)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for ax, metric, label in zip(axes, ('top1', 'balanced_acc'), ('top-1 accuracy (%)', 'balanced accuracy (%)')):
        for i, setting in enumerate(settings):
            values = [r[metric] for r in runs if r['setting'] == setting]
            ax.scatter([i] * len(values), values, s=14, color='0.6', zorder=2)
            ax.errorbar(i, summary[setting][metric], yerr=summary[setting][f'{metric}_std'], fmt='o',
                        color='C3' if setting == 'guideline' else 'C0', capsize=4, zorder=3)
        ax.set_xticks(range(len(settings)), settings, rotation=30, ha='right')
        ax.set_ylabel(label)
        ax.grid(axis='y', alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp.png')
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group('data')
    data.add_argument('--data', metavar='PATH', help='ImageFolder root with train/ and val/ (default: elpv)')
    data.add_argument('--train-split', default='train')
    data.add_argument('--val-split', default='val')
    data.add_argument('--val-fraction', type=float, default=0.25, help='elpv: held-out share of every class')
    data.add_argument('--split-seed', type=int, default=0, help='elpv: which images are held out')
    data.add_argument('--in-chans', type=int, default=None, help='1 (grayscale) or 3; default 1 for elpv, 3 for --data')
    data.add_argument('--img-size', type=int, default=64)
    data.add_argument('--scale-min', type=float, default=0.7, help='RandomResizedCrop lower area bound')
    data.add_argument('--vflip', type=float, default=0.5, help='vertical flip probability (0 for natural images)')
    data.add_argument('--workers', type=int, default=1)
    model = parser.add_argument_group('model and dropout')
    model.add_argument('--model', default='resnet18', help='a *_dropres variant, with or without the suffix')
    model.add_argument('--model-kwargs', nargs='*', default=dict(HALF_WIDTH_RESNET18), action=ParseKwargs,
                       help='create_model kwargs, k=v (default: half-width resnet18; pass the flag alone for none)')
    model.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=SETTINGS)
    model.add_argument('--branch-drop-rate', type=float, default=0.1)
    model.add_argument('--drop-rate', type=float, default=0.2)
    train = parser.add_argument_group('training')
    train.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    train.add_argument('--epochs', type=int, default=5)
    train.add_argument('--batch-size', type=int, default=64)
    train.add_argument('--opt', default='adamw')
    train.add_argument('--lr', type=float, default=2e-3)
    train.add_argument('--weight-decay', type=float, default=0.05)
    train.add_argument('--sched', default='cosine')
    train.add_argument('--warmup-epochs', type=int, default=1)
    train.add_argument('--smoothing', type=float, default=0.1)
    train.add_argument('--device', default='cpu')
    train.add_argument('--threads', type=int, default=None,
                       help='torch CPU threads (default: torch\'s choice; 1 is faster on a machine shared with other jobs)')
    train.add_argument('--amp', action='store_true', help='bfloat16 autocast')
    train.add_argument('--channels-last', action='store_true')
    parser.add_argument('--out', type=Path, default=None,
                        help='results path without suffix (default benchmarks/results/accuracy_<data>_<model>_<device>)')
    args = parser.parse_args(argv)
    if args.in_chans is None:
        args.in_chans = 3 if args.data else 1
    if args.in_chans not in (1, 3):
        parser.error(f'--in-chans must be 1 or 3, got {args.in_chans}')
    if len(args.seeds) < 2:
        parser.error('--seeds needs at least 2 seeds for a std (seed noise is the point of the study)')
    return args


def main(argv=None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    root, class_to_idx, train_loader_fn, val_loader = build_loaders(args, device)
    data_name = Path(args.data).name if args.data else 'elpv'
    out = args.out or RESULTS_DIR / f'accuracy_{data_name}_{args.model}_{device.type}'
    machine = machine_info(device)

    runs = []
    steps_per_run = args.epochs * len(train_loader_fn())
    with tqdm(total=steps_per_run * len(args.settings) * len(args.seeds), unit='step', mininterval=5, dynamic_ncols=True) as bar:
        for seed in args.seeds:  # seeds outer: a load change on the machine hits every setting alike
            for setting in args.settings:
                run = train_one(args, setting, seed, len(class_to_idx), train_loader_fn, val_loader, device, bar)
                runs.append(run)
                tqdm.write(f"{setting:>12} seed {seed}: top-1 {run['top1']:.1f}  balanced {run['balanced_acc']:.1f}"
                           f"  ({run['train_seconds']:.0f} s)")
    summary = summarize(runs, args.settings)
    table = results_table(summary)
    print(table)
    write_results(out.with_suffix('.json'), args, machine,
                  data={'root': str(root), 'name': data_name, 'classes': class_to_idx},
                  summary=summary, table_markdown=table, runs=runs)
    model_desc = args.model + (f' {args.model_kwargs}' if args.model_kwargs else '')
    title = (f'{data_name}: {model_desc}, {args.img_size}px, {args.epochs} epochs, '
             f'seeds {args.seeds}; branch p={args.branch_drop_rate}, head p={args.drop_rate}; mean ± std')
    plot(runs, summary, title, out.with_suffix('.png'))
    print(f'wrote {out.with_suffix(".json")} and {out.with_suffix(".png")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
