"""The two module tests of Kim et al. (UAI 2023, arXiv 2302.06112), on synthetic data.

Variance shift: a dropout makes an activation's variance in training differ from its variance at
inference. Each test reports the ratio Var(no dropout) / Var(dropout) on the same input, so 1 means
no shift and a batch norm downstream sees the same variance in both modes.

(a) Dropout before vs after a weight layer. X0 ~ N(0, 1) goes through a trunk
    BN -> ReLU -> Linear -> BN -> ReLU, giving x; a weight layer W (std sqrt(2/width), mean swept)
    follows, and the dropout sits either before it, W·D(x), or after it, D(Wx). The ratio is taken
    at W's output, the input of the next batch norm. The paper's claim: before the weight layer
    the shift does not depend on W; after it, it does, through the mean of Wx.
(b) Residual vs non-residual. The branch is the guideline pre-activation branch
    BN -> ReLU -> Linear -> BN -> ReLU -> D -> Linear; X0 ~ N(0, std^2) with std swept. The ratio of
    the branch alone stays put (its first BN removes std), while X0 + branch approaches 1 as the
    shortcut's variance grows: the addition dilutes the shift.

Batch norms use batch statistics (the batch is large), weights are drawn once per test, and every
random draw comes from one seeded generator, so two runs print the same numbers.

    python benchmarks/module_tests.py  # table on stdout, JSON + PNG in benchmarks/results/
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from timm_dropres.records import machine_info, write_atomically, write_json

RESULTS = Path(__file__).parent / 'results'


def batch_norm(x: torch.Tensor) -> torch.Tensor:
    """BN in training mode without affine parameters (gamma=1, beta=0 as at initialisation)."""
    return F.batch_norm(x, None, None, training=True)


def he_weight(width: int, gen: torch.Generator, mean: float = 0.0) -> torch.Tensor:
    """A (width, width) weight with He-normal std sqrt(2/width) and the given mean."""
    return mean + math.sqrt(2.0 / width) * torch.randn(width, width, generator=gen)


def keep_mask(shape: Sequence[int], p: float, gen: torch.Generator) -> torch.Tensor:
    """An inverted-dropout multiplier (0 or 1/(1-p) per element) drawn from `gen`."""
    keep = 1.0 - p
    return (torch.rand(shape, generator=gen) < keep) / keep


def variance_ratio(no_drop_var: torch.Tensor, drop: torch.Tensor) -> float:
    """Mean over channels of Var(no dropout) / Var(dropout): per channel, as a batch norm sees it.

    Takes the no-dropout variances (computed once per sweep point) and the dropout activations.
    """
    return (no_drop_var / drop.var(0)).mean().item()


def weight_mean_test(
        gen: torch.Generator,
        batch: int = 100_000,
        width: int = 128,
        p: float = 0.5,
        means: Sequence[float] = tuple(i / 1000 for i in range(-20, 21, 4)),
) -> Dict[str, object]:
    """Module test (a): variance ratio at W's output with the dropout before vs after W.

    One dropout mask per position serves every weight mean (common random numbers), so the curves
    differ only by W. Also returns the ratios predicted from x's moments, assuming independent
    coordinates (q = 1 - p): before W, sum w^2 Var(x) / sum w^2 (E[x^2]/q - E[x]^2), the same for
    every W whose rows have similar norms; after W, Var(y) / ((Var(y) + E[y]^2)/q - E[y]^2), which
    falls as the mean of y = Wx, and so of W, moves away from 0.
    """
    q = 1.0 - p
    trunk_in = torch.randn(batch, width, generator=gen)
    x = torch.relu(batch_norm(torch.relu(batch_norm(trunk_in)) @ he_weight(width, gen).T))
    x_dropped = x * keep_mask(x.shape, p, gen)
    y_mask = keep_mask(x.shape, p, gen)
    x_mean, x_var, x_sq = x.mean(0), x.var(0), (x * x).mean(0)
    rows = []
    for mean in means:
        w = he_weight(width, gen, mean)
        y = x @ w.T
        y_mean, y_var = y.mean(0), y.var(0)
        w2 = w * w
        rows.append({
            'weight_mean': mean,
            'before_weight': variance_ratio(y_var, x_dropped @ w.T),
            'after_weight': variance_ratio(y_var, y * y_mask),
            'before_weight_predicted': ((w2 @ x_var) / (w2 @ (x_sq / q - x_mean ** 2))).mean().item(),
            'after_weight_predicted': (y_var / ((y_var + y_mean ** 2) / q - y_mean ** 2)).mean().item(),
        })
    return {'batch': batch, 'width': width, 'drop_rate': p, 'rows': rows}


def residual_test(
        gen: torch.Generator,
        batch: int = 100_000,
        width: int = 128,
        rates: Sequence[float] = (0.1, 0.3, 0.5),
        stds: Sequence[float] = tuple(round(0.2 + 0.8 * i, 1) for i in range(7)),
) -> Dict[str, object]:
    """Module test (b): variance ratio of the branch alone and of X0 + branch, per rate and input std.

    One uniform draw per element gives every rate's mask (element kept if u < 1 - p), and one
    N(0, 1) draw, scaled, gives every std's X0: the sweep varies only the rate and the std.
    """
    w1, w2 = he_weight(width, gen), he_weight(width, gen)
    z = torch.randn(batch, width, generator=gen)
    u = torch.rand(batch, width, generator=gen)
    rows = []
    for std in stds:
        x0 = std * z
        h = torch.relu(batch_norm(torch.relu(batch_norm(x0)) @ w1.T))
        branch = h @ w2.T
        branch_var, residual_var = branch.var(0), (x0 + branch).var(0)
        for p in rates:
            branch_dropped = (h * ((u < 1.0 - p) / (1.0 - p))) @ w2.T
            branch_ratio = variance_ratio(branch_var, branch_dropped)
            residual_ratio = variance_ratio(residual_var, branch_dropped.add_(x0))  # in place: X0 + branch
            rows.append({'drop_rate': p, 'input_std': std, 'branch': branch_ratio, 'residual': residual_ratio})
    return {'batch': batch, 'width': width, 'rows': sorted(rows, key=lambda r: (r['drop_rate'], r['input_std']))}


def format_tables(weight: Dict[str, object], residual: Dict[str, object]) -> str:
    lines = [
        f"(a) dropout before vs after a weight layer: Var(Wx)/Var(W·D(x)) and Var(Wx)/Var(D(Wx)), "
        f"p={weight['drop_rate']}, batch {weight['batch']}, width {weight['width']}",
        f"{'weight mean':>11}  {'before W':>8} {'(pred)':>7}  {'after W':>8} {'(pred)':>7}",
    ]
    for r in weight['rows']:
        lines.append(
            f"{r['weight_mean']:>11.3f}  {r['before_weight']:>8.4f} {r['before_weight_predicted']:>7.4f}"
            f"  {r['after_weight']:>8.4f} {r['after_weight_predicted']:>7.4f}")
    rates = sorted({r['drop_rate'] for r in residual['rows']})
    lines += [
        '',
        f"(b) residual vs non-residual: Var(no dropout)/Var(dropout), branch alone | X0 + branch, "
        f"batch {residual['batch']}, width {residual['width']}",
        f"{'input std':>9}  " + '  '.join(f"{f'p={p}: branch | X0+branch':>26}" for p in rates),
    ]
    by_std: Dict[float, Dict[float, dict]] = {}
    for r in residual['rows']:
        by_std.setdefault(r['input_std'], {})[r['drop_rate']] = r
    for std, per_rate in by_std.items():
        cells = '  '.join(f"{per_rate[p]['branch']:>15.4f} | {per_rate[p]['residual']:>8.4f}" for p in rates)
        lines.append(f'{std:>9.1f}  {cells}')
    return '\n'.join(lines)


def plot(weight: Dict[str, object], residual: Dict[str, object], path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(11, 4.2))
    rows = weight['rows']
    means = [r['weight_mean'] for r in rows]
    for key, label, colour in (('before_weight', 'W·D(x): dropout before W', 'tab:blue'),
                               ('after_weight', 'D(Wx): dropout after W', 'tab:red')):
        ax_a.plot(means, [r[key] for r in rows], 'o-', color=colour, label=label)
        ax_a.plot(means, [r[f'{key}_predicted'] for r in rows], '--', color=colour, alpha=0.6, label=f'{label} (predicted)')
    ax_a.set(xlabel='mean of W', ylabel='Var(no dropout) / Var(dropout)',
             title=f"(a) before vs after a weight layer, p={weight['drop_rate']}")
    ax_a.legend(fontsize=8)
    ax_a.grid(alpha=0.3)

    for p, colour in zip(sorted({r['drop_rate'] for r in residual['rows']}), ('tab:green', 'tab:orange', 'tab:purple')):
        sub = [r for r in residual['rows'] if r['drop_rate'] == p]
        stds = [r['input_std'] for r in sub]
        ax_b.plot(stds, [r['residual'] for r in sub], 'o-', color=colour, label=f'X0 + branch, p={p}')
        ax_b.plot(stds, [r['branch'] for r in sub], 's--', color=colour, alpha=0.6, label=f'branch alone, p={p}')
    ax_b.set(xlabel='std of X0', ylabel='Var(no dropout) / Var(dropout)', title='(b) residual vs non-residual')
    ax_b.legend(fontsize=8)
    ax_b.grid(alpha=0.3)
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format='png'))
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--batch', type=int, default=100_000, help='samples per test (the paper: 100000)')
    parser.add_argument('--out', type=Path, default=RESULTS, help='folder for module_tests.json / .png')
    parser.add_argument('--no-plot', action='store_true', help='skip the PNG (no matplotlib needed)')
    args = parser.parse_args(argv)
    if args.batch < 2:
        parser.error(f'--batch must be at least 2, got {args.batch}')
    if not args.no_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("the PNG needs matplotlib: pip install 'timm-dropres[bench]' (or pass --no-plot)")

    start = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        weight = weight_mean_test(gen, batch=args.batch)
        residual = residual_test(gen, batch=args.batch)
    seconds = time.perf_counter() - start
    print(format_tables(weight, residual))
    print(f'\n{seconds:.1f} s on {torch.get_num_threads()} threads')

    report = {
        'command': ' '.join(['python benchmarks/module_tests.py', *(argv if argv is not None else sys.argv[1:])]),
        'machine': machine_info(),
        'seed': args.seed,
        'seconds': round(seconds, 2),
        'weight_mean_test': weight,
        'residual_test': residual,
    }
    write_json(args.out / 'module_tests.json', report)
    if not args.no_plot:
        plot(weight, residual, args.out / 'module_tests.png')
    print(f"wrote {args.out / 'module_tests.json'}" + ('' if args.no_plot else f" and {args.out / 'module_tests.png'}"))
    return 0


if __name__ == '__main__':
    sys.exit(main())
