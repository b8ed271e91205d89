"""The variance-shift diagnostic on cases with known answers, and its `timm-dropres shift` command."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn
from PIL import Image
from timm.layers import BatchNormAct2d, create_conv2d
from timm.models.resnetv2 import PreActBasic

import timm_dropres
from timm_dropres import shift
from timm_dropres.cli import main


def _normal_batches(count, *shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen) for _ in range(count)]


@pytest.mark.parametrize('p', [0.1, 0.3, 0.5])
def test_lone_dropout_on_standard_normal_gives_one_minus_p(p):
    # Var(x) = 1 at eval, E[D(x)^2] = 1/(1-p) in training: ratio 1 - p; E|D(x) - x| = 2p E|x| = 2p sqrt(2/pi)
    report = shift.variance_shift(nn.Sequential(nn.Dropout(p)), _normal_batches(4, 4096, 16))
    assert [s.kind for s in report.sites] == [shift.LOGITS]
    assert report.logits.ratio == pytest.approx(1 - p, abs=0.02)
    assert report.logit_abs_change == pytest.approx(2 * p * math.sqrt(2 / math.pi), rel=0.03)
    assert report.samples == 4 * 4096


def _pre_act_block(position, p=0.3):
    block = PreActBasic(16, conv_layer=create_conv2d, norm_layer=BatchNormAct2d)
    return timm_dropres.apply(block, branch_drop_rate=p, drop_rate=0.0, branch_drop_pos=position)


def test_dropout_after_the_last_norm_shifts_no_norm_input_in_the_block():
    # PreActBasic with the guideline: norm1 -> conv1 -> norm2 -> [dropout] -> conv2 (+): no BN downstream
    report = shift.variance_shift(
        _pre_act_block('guideline'), _normal_batches(2, 8, 16, 8, 8, seed=1),
        calibration=_normal_batches(4, 8, 16, 8, 8, seed=2))
    norm_inputs = {s.name: s.ratio for s in report.of_kind(shift.BN_INPUT)}
    assert norm_inputs == {'norm1': 1.0, 'norm2': 1.0}  # the same tensor in both passes
    (block_output,) = report.of_kind(shift.BLOCK_OUTPUT)
    assert block_output.name == '' and block_output.ratio < 0.97


def test_dropout_before_a_norm_shifts_its_input():
    # before_norm drops conv1's output, norm2's input: about (1 - p) for a near zero-mean conv output
    report = shift.variance_shift(
        _pre_act_block('before_norm'), _normal_batches(2, 8, 16, 8, 8, seed=1),
        calibration=_normal_batches(4, 8, 16, 8, 8, seed=2))
    norm_inputs = {s.name: s.ratio for s in report.of_kind(shift.BN_INPUT)}
    assert norm_inputs['norm1'] == 1.0
    assert 0.6 < norm_inputs['norm2'] < 0.8


def test_dropout_inside_a_norm_act_layer_stays_on_with_running_stats():
    # timm's BatchNormAct2d holds the pre-activation guideline dropout: freezing the norm must not stop it
    block = _pre_act_block('guideline').eval()
    with shift.dropout_on_running_stats(block):
        assert not block.norm2.training
        assert block.norm2.act[1].training
    assert not any(m.training for m in block.modules())  # eval mode restored everywhere


def test_recalibration_averages_batch_statistics_and_restores_momentum():
    norm = nn.BatchNorm1d(3).eval()
    batches = [torch.randn(64, 3) * (i + 1) + i for i in range(3)]
    assert shift.recalibrate_batch_norm(nn.Sequential(norm), batches) == 3
    torch.testing.assert_close(norm.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0))
    torch.testing.assert_close(norm.running_var, torch.stack([b.var(0) for b in batches]).mean(0))
    assert norm.momentum == 0.1 and not norm.training
    with pytest.raises(ValueError, match='at least one batch'):
        shift.recalibrate_batch_norm(nn.Sequential(norm), [])


def test_guideline_shifts_norm_inputs_less_than_before_norm_on_resnetv2():
    # measured on resnetv2_18, 64 px, p=0.3, random weights: mean BN-input ratio 0.43-0.45 (guideline)
    # vs 0.36-0.38 (before_norm) over seeds 0-2
    placements = shift.one_at_a_time(['guideline', 'before_norm'], ['pre_pool'])
    models = shift.position_models('resnetv2_18_dropres', placements, branch_drop_rate=0.3, num_classes=10)
    reports = shift.compare_positions(models, shift.random_batches((3, 64, 64), 8, 4, 2))
    mean_ratio = {
        p.branch_drop_pos: sum(s.ratio for s in r.of_kind(shift.BN_INPUT)) / len(r.of_kind(shift.BN_INPUT))
        for p, r in reports.items()}
    assert mean_ratio['guideline'] > mean_ratio['before_norm'] + 0.03


@pytest.mark.parametrize('model_name', ['resnet10t_dropres', 'resnet10t'])
def test_position_models_share_weights(model_name):
    placements = shift.one_at_a_time(['guideline', 'after_add'], ['pre_pool', 'post_pool'])
    assert [p.label for p in placements] == ['guideline/pre', 'after_add/pre', 'guideline/post']
    models = shift.position_models(model_name, placements, num_classes=4)
    states = [m.state_dict() for m in models.values()]
    for state in states[1:]:
        assert state.keys() == states[0].keys()
        assert all(torch.equal(state[k], states[0][k]) for k in state)
    for placement, model in models.items():
        assert model.dropres_settings.branch_drop_pos == placement.branch_drop_pos
        assert model.dropres_settings.head_drop_pos == placement.head_drop_pos
    # random weights: the last norms are not zeroed, so the residual branches carry the dropout
    assert all(m.layer1[0].bn2.weight.abs().min() > 0 for m in models.values())


def test_shift_command_on_random_data(tmp_path, capsys):
    out_json, out_png = tmp_path / 'shift.json', tmp_path / 'shift.png'
    assert main([
        'shift', 'resnet10t_dropres', '--data', 'random', '--img-size', '32', '--batch-size', '4',
        '--calibration-batches', '2', '--batches', '1', '--branch-drop-pos', 'guideline', 'before_norm',
        '--head-drop-pos', 'pre_pool', 'post_pool', '--json', str(out_json), '--plot', str(out_png)]) == 0
    text = capsys.readouterr().out
    assert 'RANDOM N(0,1) inputs' in text
    assert 'guideline/pre' in text and 'before_norm/pre' in text and 'guideline/post' in text
    for stage in ('stem', 'layer1', 'layer4', 'Var ratio', 'mean |dlogit|'):
        assert stage in text
    record = json.loads(out_json.read_text())
    assert record['real_images'] is False
    assert record['command'].startswith('timm-dropres shift resnet10t_dropres')
    assert [(p['branch_drop_pos'], p['head_drop_pos']) for p in record['placements']] == [
        ('guideline', 'pre_pool'), ('before_norm', 'pre_pool'), ('guideline', 'post_pool')]
    stem = [s for s in record['placements'][0]['sites'] if s['stage'] == 'stem']
    assert stem and all(s['ratio'] == 1.0 for s in stem)  # nothing upstream of the stem drops
    assert out_png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.fixture
def image_folder(tmp_path):
    gen = torch.Generator().manual_seed(0)
    for cls in ('a', 'b'):
        (tmp_path / 'imgs' / cls).mkdir(parents=True)
        for i in range(4):
            pixels = torch.randint(0, 256, (40, 40, 3), generator=gen, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / 'imgs' / cls / f'{i}.png')
    return tmp_path / 'imgs'


def test_shift_command_reads_an_image_folder(image_folder, capsys):
    assert main([
        'shift', 'resnet10t_dropres', '--data', str(image_folder), '--img-size', '32', '--batch-size', '2',
        '--calibration-batches', '2', '--batches', '2', '--branch-drop-pos', 'guideline',
        '--head-drop-pos', 'pre_pool']) == 0
    text = capsys.readouterr().out
    assert f'data: {image_folder}: 8 of 8 images at (3, 32, 32)' in text
    assert 'RANDOM' not in text


@pytest.mark.parametrize('argv, message', [
    (['--batch-size', '4'], r'has 8 images; --batch-size 4 x \(2 calibration \+ 2 measured batches\) needs 16'),
    (['--data', '/no/such/folder'], "--data must be 'auto', 'elpv', 'random' or an ImageFolder directory"),
    (['--branch-drop-rate', '1.5'], r'branch_drop_rate must be a number in \[0, 1\)'),
    (['--batches', '0'], '--batches must be at least 1'),
    (['--img-size', '0'], '--img-size must be at least 1'),
])
def test_shift_command_bad_input(image_folder, argv, message):
    base = ['shift', 'resnet10t_dropres', '--data', str(image_folder), '--img-size', '32',
            '--calibration-batches', '2', '--batches', '2', '--branch-drop-pos', 'guideline']
    with pytest.raises(SystemExit, match=message):
        main(base + argv)


def test_shift_command_unknown_model():
    with pytest.raises(SystemExit, match="unknown model 'no_such_model'"):
        main(['shift', 'no_such_model'])


def test_default_data_is_random_and_labelled_without_elpv(monkeypatch, capsys):
    monkeypatch.setattr(shift, 'elpv_root', lambda: None)
    assert main(['shift', 'resnet10t_dropres', '--img-size', '32', '--batch-size', '2', '--calibration-batches', '1',
                 '--batches', '1', '--branch-drop-pos', 'guideline', '--head-drop-pos', 'pre_pool']) == 0
    assert 'data: RANDOM N(0,1) inputs of shape (3, 32, 32) (no real images)' in capsys.readouterr().out
    with pytest.raises(SystemExit, match='--data elpv needs the elpv-dataset package'):
        main(['shift', 'resnet10t_dropres', '--data', 'elpv'])
