"""What the dropout rule costs: training step time and memory, and eval throughput, variant vs base.

For each base model (default resnet18, resnet50, resnetv2_50) four models with the same weights
are measured side by side in one process, interleaved (the order rotates every repetition, so a
load change on the machine hits all alike), after warm-up, as the median of several repetitions:

    base          timm's model (no dropout)
    base_again    a second copy of it: the A/A control, whose ratio to base is the noise floor
    dropres       the `*_dropres` variant (branch dropout 0.1 at the guideline slot, pre-pool 0.2)
    fused         the variant with timm_dropres.fused: ReLU+dropout in one op that saves only its output
    fused_native_mask  (CPU only) the same, its mask drawn by torch.native_dropout, not the fast CPU mask

Reported as ratios to base: paired per repetition (same repetition, adjacent in time), median and
interquartile range. Memory, per model, after warm-up:
    saved_MB      bytes autograd keeps for backward (torch.autograd.graph.saved_tensors_hooks, storages
                  counted once, parameters excluded): exact and deterministic, on any device
    step_peak_MB  peak bytes allocated during one training step above what was live before it (CPU:
                  the CPU allocator's own records through torch.profiler; CUDA: max_memory_allocated)
    peak_MB       step_peak plus the persistent state (parameters, gradients, optimizer state,
                  buffers, input batch): the training peak, as torch.cuda.max_memory_allocated counts it
Eval outputs (eval mode, same weights; BN statistics and affine parameters randomised first, since
timm's zero-init of the last BN would hide the branch) are compared with torch.equal.

    python benchmarks/overhead.py                                   # CPU, 128 px, batch 8
    python benchmarks/overhead.py --device cuda --channels-last --amp [--compile]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm import create_model

import timm_dropres  # noqa: F401  (registers the *_dropres variants)
from timm_dropres.fused import fuse_relu_dropout

from _common import RESULTS_DIR, machine_info, markdown_table, write_results

BASELINE = 'base'


def build_models(base_name: str, args, device: torch.device) -> Tuple[Dict[str, nn.Module], int]:
    """base, base_again, dropres and (if --fused) the fused ones: same weights, on `device`; and the fused count."""
    torch.manual_seed(0)
    base = create_model(base_name, num_classes=args.num_classes)
    _randomize_norm(base)
    models = {BASELINE: base}
    if args.aa_control:
        models['base_again'] = copy.deepcopy(base)
    variant = create_model(base_name + '_dropres', num_classes=args.num_classes)
    variant.load_state_dict(base.state_dict(), strict=True)
    models['dropres'] = variant
    fused_pairs = 0
    if args.fused:
        fused = copy.deepcopy(variant)
        fused_pairs = fuse_relu_dropout(fused)
        if fused_pairs == 0:
            raise SystemExit(f'{base_name}: no ReLU -> Dropout pair to fuse')
        models['fused'] = fused
        if device.type == 'cpu':  # the fast mask is CPU-only: elsewhere both draw with native_dropout
            models['fused_native_mask'] = copy.deepcopy(variant)
            fuse_relu_dropout(models['fused_native_mask'], fast_cpu_mask=False)
    for model in models.values():
        model.to(device)
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
    return models, fused_pairs


@torch.no_grad()
def _randomize_norm(model: nn.Module) -> None:
    """Random BN statistics and affine parameters, so every branch (and its dropout) matters in eval."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.1)


def make_input(args, device: torch.device) -> torch.Tensor:
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    return x.contiguous(memory_format=torch.channels_last) if args.channels_last else x


class Trainer:
    """One model's training step (zero_grad, forward, loss, backward, SGD step), optionally compiled."""

    def __init__(self, model: nn.Module, args, device: torch.device):
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        self.amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.amp else nullcontext
        self.forward = torch.compile(model) if args.compile else model
        self.target = torch.randint(0, args.num_classes, (args.batch_size,), device=device)

    def step(self, x: torch.Tensor) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=False)  # gradients stay allocated: part of the state
        with self.amp():
            loss = F.cross_entropy(self.forward(x), self.target)
        loss.backward()
        self.optimizer.step()

    @torch.inference_mode()
    def eval_forward(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        with self.amp():
            return self.forward(x)

    def state_bytes(self, x: torch.Tensor) -> int:
        """Live bytes that persist between steps: parameters, their gradients, optimizer state, buffers, input."""
        tensors = [p for p in self.model.parameters()] + [p.grad for p in self.model.parameters() if p.grad is not None]
        tensors += [t for s in self.optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
        tensors += list(self.model.buffers()) + [x, self.target]
        return sum(t.numel() * t.element_size() for t in tensors)


class Clock:
    """Wall time of a callable: perf_counter on CPU (plus this process's CPU time), CUDA events on GPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == 'cuda'

    def __call__(self, fn: Callable[[], Any]) -> Dict[str, float]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return {'ms': start.elapsed_time(end)}
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        return {'ms': 1e3 * (time.perf_counter() - wall), 'cpu_ms': 1e3 * (time.process_time() - cpu)}


def interleaved(names: List[str], fn: Callable[[str], Dict[str, float]], repeats: int) -> Dict[str, List[Dict[str, float]]]:
    """fn(name) for every name, `repeats` times, the order rotated each repetition."""
    times = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            times[n].append(fn(n))
    return times


def ratio_stats(times: Dict[str, List[Dict[str, float]]], key: str) -> Dict[str, Dict[str, float]]:
    """Per model: median time, and median + IQR of its per-repetition ratio to the baseline."""
    out = {}
    base = [t[key] for t in times[BASELINE]]
    for name, ts in times.items():
        values = [t[key] for t in ts]
        ratios = [v / b for v, b in zip(values, base)]
        q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
        out[name] = {'median_ms': statistics.median(values), 'ratio': statistics.median(ratios),
                     'ratio_q1': q1, 'ratio_q3': q3}
    return out


def saved_bytes(trainer: Trainer, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward in one training forward (no parameters)."""
    params = {p.untyped_storage().data_ptr() for p in trainer.model.parameters()}
    storages: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[s.data_ptr()] = s.nbytes()
        return t

    trainer.model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), trainer.amp():
        loss = F.cross_entropy(trainer.model(x), trainer.target)
    del loss
    return sum(storages.values())


def step_peak_bytes(trainer: Trainer, x: torch.Tensor, device: torch.device) -> int:
    """Peak bytes allocated during one training step above the bytes live before it."""
    if device.type == 'cuda':
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        trainer.step(x)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) - before
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        trainer.step(x)
    # the CPU allocator reports every allocation and free with its size; the running sum's maximum is
    # the peak of bytes allocated inside the step (what was live before it is not counted)
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == 'cpu':
            events.append((event.start_time_ns, event.extra_fields.alloc_size))
        stack.extend(event.children)
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak


def measure_family(base_name: str, args, device: torch.device, clock: Clock) -> Dict[str, Any]:
    models, fused_pairs = build_models(base_name, args, device)
    names = list(models)
    x = make_input(args, device)
    trainers = {n: Trainer(m, args, device) for n, m in models.items()}

    reference = trainers[BASELINE].eval_forward(x)
    eval_identical = {n: bool(torch.equal(t.eval_forward(x), reference)) for n, t in trainers.items()}

    for _ in range(args.warmup):
        for t in trainers.values():
            t.step(x)
            t.eval_forward(x)
    train_times = interleaved(names, lambda n: clock(lambda: trainers[n].step(x)), args.repeats)
    eval_times = interleaved(names, lambda n: clock(lambda: trainers[n].eval_forward(x)), args.repeats)

    memory = {}
    for n, t in trainers.items():
        step_peak = step_peak_bytes(t, x, device)
        memory[n] = {
            'saved_MB': None if args.compile else saved_bytes(t, x) / 2**20,
            'step_peak_MB': step_peak / 2**20,
            'peak_MB': (step_peak + t.state_bytes(x)) / 2**20,
        }
    result = {
        'models': {n: (base_name if n.startswith(BASELINE) else base_name + '_dropres') for n in names},
        'fused_pairs': fused_pairs,
        'eval_bit_identical': eval_identical,
        'train': ratio_stats(train_times, 'ms'),
        'eval': ratio_stats(eval_times, 'ms'),
        'memory': memory,
        'raw_ms': {'train': {n: [t['ms'] for t in ts] for n, ts in train_times.items()},
                   'eval': {n: [t['ms'] for t in ts] for n, ts in eval_times.items()}},
    }
    if device.type == 'cpu':
        result['train_cpu_time'] = ratio_stats(train_times, 'cpu_ms')
    return result


def tables(results: Dict[str, Dict[str, Any]]) -> str:
    """Markdown: one row per (base model, measured model)."""
    cpu_time = all('train_cpu_time' in r for r in results.values())
    header = ['model', 'measured', 'train ms', 'train ratio [IQR]'] + (['train CPU-time ratio [IQR]'] if cpu_time else [])
    header += ['eval ratio [IQR]', 'peak mem ratio', 'step-peak ratio', 'saved ratio', 'eval identical']
    rows = []
    for base_name, r in results.items():
        mem_base = r['memory'][BASELINE]
        for n in r['train']:
            tr, ev, mem = r['train'][n], r['eval'][n], r['memory'][n]
            saved = f"{mem['saved_MB'] / mem_base['saved_MB']:.3f}" if mem['saved_MB'] is not None else 'n/a'
            rows.append([
                base_name, n, f"{tr['median_ms']:.1f}", _ratio(tr),
                *([_ratio(r['train_cpu_time'][n])] if cpu_time else []), _ratio(ev),
                f"{mem['peak_MB'] / mem_base['peak_MB']:.3f}",
                f"{mem['step_peak_MB'] / mem_base['step_peak_MB']:.3f}",
                saved, 'yes' if r['eval_bit_identical'][n] else 'NO',
            ])
    return markdown_table(header, rows)


def _ratio(stats: Dict[str, float]) -> str:
    return f"{stats['ratio']:.3f} [{stats['ratio_q1']:.3f}, {stats['ratio_q3']:.3f}]"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=['resnet18', 'resnet50', 'resnetv2_50'],
                        help='base model names; each is measured against its *_dropres variant')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-size', type=int, default=None, help='default 8 on CPU, 128 on CUDA')
    parser.add_argument('--img-size', type=int, default=None, help='default 128 on CPU, 224 on CUDA')
    parser.add_argument('--num-classes', type=int, default=1000)
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s choice)')
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--amp', action='store_true', help='bfloat16 autocast')
    parser.add_argument('--compile', action='store_true', help='torch.compile every model')
    parser.add_argument('--fused', action=argparse.BooleanOptionalAction, default=True,
                        help='also measure the fused ReLU+dropout variant (timm_dropres.fused)')
    parser.add_argument('--aa-control', action=argparse.BooleanOptionalAction, default=True,
                        help='also measure a second copy of the base model: the noise floor')
    parser.add_argument('--out', type=Path, default=None, help='results JSON (default benchmarks/results/overhead_<device>.json)')
    args = parser.parse_args(argv)
    cuda = args.device.startswith('cuda')
    args.batch_size = args.batch_size or (128 if cuda else 8)
    args.img_size = args.img_size or (224 if cuda else 128)
    if args.repeats < 3:
        parser.error('--repeats must be at least 3 (a median and quartiles need them)')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    machine = machine_info(device)
    clock = Clock(device)
    results = {}
    for base_name in args.models:
        print(f'measuring {base_name} ...', flush=True)
        results[base_name] = measure_family(base_name, args, device, clock)
    table = tables(results)
    print(table)
    out = args.out or RESULTS_DIR / f'overhead_{device.type}.json'
    write_results(out, args, machine, table_markdown=table, results=results)
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
