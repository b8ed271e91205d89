"""One torchrun worker of tests/test_distributed.py: a `*_dropres` variant under DDP on CPU (gloo).

It does not import timm_dropres: the variant must come from the autoload, in every worker. It sets
up the process group and seeds the way timm's train.py does (utils.init_distributed_device,
utils.random_seed(seed, rank)), wraps DDP the CPU way (no device_ids), and writes what the test
compares across ranks to OUT_DIR/rank<N>.pt.

Usage: python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT_DIR
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import timm
from timm import utils
from timm.layers import convert_sync_batchnorm

MODEL = 'resnet10t_dropres'
STEPS = 3
BATCH, IMG_SIZE, NUM_CLASSES = 4, 32, 2


def dropouts(model: nn.Module) -> List[tuple]:
    return [(name, type(m).__name__, m.p) for name, m in model.named_modules() if isinstance(m, nn.Dropout)]


def record_masks(model: nn.Module, masks: Dict[str, tuple]) -> None:
    """Keep, per dropout, its last call's (elements it zeroed, elements that were not zero before)."""
    def hook(name):
        def keep(module, inputs, output):
            masks[name] = ((output == 0) & (inputs[0] != 0), inputs[0] != 0)
        return keep
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout):
            module.register_forward_hook(hook(name))


def sync_bn_report(model: nn.Module, batch: torch.Tensor) -> dict:
    """timm's convert_sync_batchnorm (train.py --sync-bn): every dropout kept, and still acting."""
    synced = convert_sync_batchnorm(copy.deepcopy(model))
    masks: Dict[str, tuple] = {}
    record_masks(synced, masks)
    synced.train()
    for module in synced.modules():
        if isinstance(module, nn.SyncBatchNorm):
            module.eval()  # SyncBatchNorm syncs only CUDA tensors in training; eval BN keeps the check on CPU
    with torch.no_grad():
        synced(batch)
    return {
        'dropouts': dropouts(synced),
        'sync_bn': sum(isinstance(m, nn.SyncBatchNorm) for m in synced.modules()),
        'plain_bn': sum(type(m) is nn.BatchNorm2d for m in synced.modules()),
        'dropped_fraction': {name: (dropped.sum() / nonzero.sum()).item() for name, (dropped, nonzero) in masks.items()},
    }


def main() -> None:
    out_dir = Path(sys.argv[1])
    args = argparse.Namespace(device='cpu')
    utils.init_distributed_device(args)  # train.py's set-up: gloo on CPU, env:// from torchrun
    assert args.distributed and args.world_size == 2, 'run under torchrun with 2 processes'
    utils.random_seed(42, args.rank)  # train.py: seed + rank, so each rank draws its own dropout masks

    model = timm.create_model(MODEL, num_classes=NUM_CLASSES)
    report = {'rank': args.rank, 'package': sys.modules['timm_dropres'].__file__, 'dropouts': dropouts(model)}
    inputs = torch.randn(STEPS, BATCH, 3, IMG_SIZE, IMG_SIZE)  # each rank its own data, as with a sampler
    targets = torch.randint(0, NUM_CLASSES, (STEPS, BATCH))
    report['sync_bn_conversion'] = sync_bn_report(model, inputs[0])

    ddp = DistributedDataParallel(model)  # CPU module: no device_ids
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    masks: Dict[str, tuple] = {}
    record_masks(model, masks)
    report['steps'] = []
    for step in range(STEPS):
        rng = torch.get_rng_state()
        with ddp.no_sync():  # this rank's own gradient, for the test to average
            F.cross_entropy(ddp(inputs[step]), targets[step]).backward()
        local = {n: p.grad.clone() for n, p in model.named_parameters()}
        optimizer.zero_grad(set_to_none=True)
        torch.set_rng_state(rng)  # the same dropout masks again, now with gradient all-reduce
        loss = F.cross_entropy(ddp(inputs[step]), targets[step])
        loss.backward()
        report['steps'].append({
            'loss': loss.item(),
            'local_grads': local,
            'synced_grads': {n: p.grad.clone() for n, p in model.named_parameters()},
            'masks': {n: dropped.clone() for n, (dropped, _) in masks.items()},
        })
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    report['params'] = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.save(report, out_dir / f'rank{args.rank}.pt')
    torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()
