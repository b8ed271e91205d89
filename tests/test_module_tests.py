"""The module-test math of benchmarks/module_tests.py against closed forms, at a small batch."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).parents[1] / 'benchmarks' / 'module_tests.py'
_spec = importlib.util.spec_from_file_location('module_tests', _PATH)
module_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(module_tests)

RELU_MEAN, RELU_SQ = 1 / math.sqrt(2 * math.pi), 0.5
"""E[x] and E[x^2] of ReLU(z), z ~ N(0, 1): what every ReLU after a training-mode BN gives."""


def relu_ratio(p: float) -> float:
    """Var(x) / Var(D(x)) for x = ReLU(N(0, 1)): (E[x^2] - E[x]^2) / (E[x^2]/(1-p) - E[x]^2)."""
    return (RELU_SQ - RELU_MEAN ** 2) / (RELU_SQ / (1 - p) - RELU_MEAN ** 2)


@pytest.fixture(scope='module')
def weight_test():
    return module_tests.weight_mean_test(torch.Generator().manual_seed(0), batch=20_000, width=128)


def test_dropout_before_the_weight_does_not_depend_on_its_mean(weight_test):
    before = [r['before_weight'] for r in weight_test['rows']]
    assert relu_ratio(0.5) == pytest.approx(0.4054, abs=1e-4)
    assert all(abs(b - relu_ratio(0.5)) < 0.02 for b in before)
    assert max(before) - min(before) < 0.03


def test_dropout_after_the_weight_falls_as_the_mean_moves_from_zero(weight_test):
    rows = {r['weight_mean']: r for r in weight_test['rows']}
    assert set(rows) >= {-0.02, 0.0, 0.02}
    for mean in (-0.02, 0.02):
        assert rows[mean]['after_weight'] < rows[0.0]['after_weight'] - 0.08
    for r in weight_test['rows']:  # the closed form from the moments of x and Wx
        assert r['after_weight'] == pytest.approx(r['after_weight_predicted'], abs=0.01)


def test_residual_addition_dilutes_the_shift_and_the_branch_alone_does_not():
    result = module_tests.residual_test(torch.Generator().manual_seed(0), batch=10_000, width=64)
    for p in (0.1, 0.3, 0.5):
        rows = [r for r in result['rows'] if r['drop_rate'] == p]
        assert [r['input_std'] for r in rows] == sorted(r['input_std'] for r in rows)
        branch = [r['branch'] for r in rows]
        residual = [r['residual'] for r in rows]
        assert all(b == pytest.approx(relu_ratio(p), abs=0.02) for b in branch)  # BN removes the input scale
        assert all(later > earlier for earlier, later in zip(residual, residual[1:]))
        assert all(res > b for res, b in zip(residual, branch))
        assert residual[-1] > 0.9


def test_module_tests_are_deterministic_and_saved(tmp_path, capsys):
    assert module_tests.main(['--batch', '2000', '--out', str(tmp_path), '--no-plot', '--seed', '3']) == 0
    first = json.loads((tmp_path / 'module_tests.json').read_text())
    assert module_tests.main(['--batch', '2000', '--out', str(tmp_path), '--no-plot', '--seed', '3']) == 0
    second = json.loads((tmp_path / 'module_tests.json').read_text())
    assert first['weight_mean_test'] == second['weight_mean_test']
    assert first['residual_test'] == second['residual_test']
    assert first['command'] == 'python benchmarks/module_tests.py --batch 2000 --out ' + str(tmp_path) + ' --no-plot --seed 3'
    assert first['machine']['torch'] == torch.__version__
    assert not (tmp_path / 'module_tests.png').exists()
    assert '(a) dropout before vs after a weight layer' in capsys.readouterr().out
