"""Two torchrun processes on CPU (gloo) train a `*_dropres` variant under DistributedDataParallel.

timm's train.py is a GPU script (under torchrun on CPU it passes device_ids for a CPU module and
DDP refuses), so tests/ddp_worker.py does train.py's process-group set-up and seeding and wraps DDP
the CPU way. The workers import only timm: the variant reaches them through the autoload.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name('ddp_worker.py')
WORLD_SIZE = 2


@pytest.fixture(scope='module')
def ranks(tmp_path_factory) -> list:
    out = tmp_path_factory.mktemp('ddp')
    env = {k: v for k, v in os.environ.items() if k != 'TIMM_DROPRES_AUTOLOAD'}
    env['OMP_NUM_THREADS'] = '1'
    result = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(WORLD_SIZE),
         str(WORKER), str(out)],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return [torch.load(out / f'rank{r}.pt', weights_only=False) for r in range(WORLD_SIZE)]


def test_every_worker_gets_the_variant_through_autoload(ranks):
    assert [r['rank'] for r in ranks] == [0, 1]
    for report in ranks:
        assert report['package'].endswith(os.path.join('timm_dropres', '__init__.py'))
        assert len([d for d in report['dropouts'] if d[0] != 'pre_pool_drop']) == 4  # resnet10t: 4 BasicBlocks
        assert ('pre_pool_drop', 'Dropout', 0.2) in report['dropouts']


def _flat(grads: dict) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads.values()])


def test_gradients_are_the_average_of_the_ranks(ranks):
    for step in range(len(ranks[0]['steps'])):
        first, second = (r['steps'][step] for r in ranks)
        assert first['synced_grads'].keys() == second['synced_grads'].keys()
        synced = _flat(first['synced_grads'])
        assert torch.equal(synced, _flat(second['synced_grads'])), f'step {step}: gradients differ across ranks'
        local = [_flat(first['local_grads']), _flat(second['local_grads'])]
        assert not torch.equal(*local), 'ranks saw the same batch and masks: the average would prove nothing'
        torch.testing.assert_close(synced, sum(local) / WORLD_SIZE, rtol=1e-4, atol=1e-6)


def test_dropout_masks_differ_across_ranks(ranks):
    for step in range(len(ranks[0]['steps'])):
        first, second = (r['steps'][step]['masks'] for r in ranks)
        assert first.keys() == {name for name, _, _ in ranks[0]['dropouts']}, 'every dropout acts in every step'
        for name in first:
            assert first[name].any() and second[name].any(), f'{name} dropped nothing'
            assert not torch.equal(first[name], second[name]), f'{name}: the same mask on both ranks'


def test_parameters_stay_identical_across_ranks(ranks):
    first, second = (r['params'] for r in ranks)
    assert all(torch.equal(p, second[name]) for name, p in first.items())
    assert all(torch.isfinite(torch.tensor(s['loss'])) for r in ranks for s in r['steps'])


def test_sync_batchnorm_conversion_keeps_every_dropout(ranks):
    for report in ranks:
        converted = report['sync_bn_conversion']
        assert converted['dropouts'] == report['dropouts']
        assert converted['sync_bn'] > 0 and converted['plain_bn'] == 0
        fractions = converted['dropped_fraction']
        assert fractions.keys() == {name for name, _, _ in report['dropouts']}, 'every dropout still in the forward'
        for name, _, p in report['dropouts']:
            assert abs(fractions[name] - p) < 0.05, f'{name} drops {fractions[name]:.3f}, expected about {p}'
