"""`timm-dropres show` lists modules in execution order with each dropout marked; `list` filters variants."""
from __future__ import annotations

from typing import List

import pytest
import timm

from timm_dropres.cli import main
from timm_dropres.show import DROPOUT_MARK, list_variants, placement_text


def _names(text: str) -> List[str]:
    """Module names (or markers) of the listing, in order; block and head headers as they are."""
    names = []
    for line in text.splitlines():
        if line.startswith('    ') or line.startswith(f'  {DROPOUT_MARK}'):
            names.append(('>' if line.startswith(f'  {DROPOUT_MARK}') else '') + line[5:].split()[0])
        elif line and not line.startswith(' '):
            names.append(line.split()[0])
    return names


def _after(names: List[str], name: str) -> List[str]:
    """The name following each occurrence of `name`."""
    return [names[i + 1] for i, n in enumerate(names) if n == name]


def test_resnet50_guideline_drops_between_act2_and_conv3(capsys):
    assert main(['show', 'resnet50_dropres']) == 0
    names = _names(capsys.readouterr().out)
    assert [n for n in names if n.startswith('layer')] == ['layer1.0', 'layer2.0', 'layer3.0', 'layer4.0']
    assert _after(names, '>aa') == ['conv3'] * 4
    assert [names[i - 1] for i, n in enumerate(names) if n == '>aa'] == ['act2'] * 4
    # timm's Bottleneck runs its shortcut after bn3, then adds, then act3
    block = names[names.index('layer1.0'):names.index('layer2.0')]
    assert block[block.index('bn3'):] == ['bn3', 'downsample.0', 'downsample.1', '(+)', 'act3']
    head = names[names.index('head'):]
    assert head == ['head', '>pre_pool_drop', 'global_pool.pool', 'global_pool.flatten', 'fc']


def test_resnetv2_50_guideline_drops_inside_norm3_right_before_conv3():
    text = placement_text(timm.create_model('resnetv2_50_dropres'), 'resnetv2_50_dropres')
    names = _names(text)
    assert _after(names, '>norm3.act.1') == ['conv3'] * 4
    # pre-activation: norm1 runs first and feeds the projection shortcut; nothing after the addition
    block = names[names.index('stages.0.blocks.0'):names.index('stages.1.blocks.0')]
    assert block[:4] == ['stages.0.blocks.0', 'norm1', 'norm1.act', 'downsample.conv']
    assert block[-3:] == ['>norm3.act.1', 'conv3', '(+)']
    assert "branch_drop_pos='guideline' (p=0.1), head_drop_pos='pre_pool' (p=0.2)" in text


def test_after_add_and_post_pool_on_resnetv2():
    model = timm.create_model('resnetv2_18_dropres', branch_drop_pos='after_add', head_drop_pos='post_pool')
    names = _names(placement_text(model, 'resnetv2_18_dropres'))
    assert _after(names, '(+)') == ['>output_drop'] * 4
    head = names[names.index('head'):]
    assert head == ['head', 'norm', 'norm.act', 'head.global_pool.pool', '>head.drop', 'head.fc', 'head.flatten']


def test_functional_post_pool_dropout_is_listed_between_pool_and_classifier(capsys):
    assert main(['show', 'resnet18_dropres', '--head-drop-pos', 'post_pool', '--branch-drop-pos', 'before_norm']) == 0
    text = capsys.readouterr().out
    names = _names(text)
    assert _after(names, 'conv2') == ['>conv2.output_drop'] * 4  # before_norm: conv2 -> [dropout] -> bn2
    assert _after(names, '>conv2.output_drop') == ['bn2'] * 4
    assert names[names.index('head'):] == ['head', 'global_pool.pool', 'global_pool.flatten', '>(functional)', 'fc']
    assert 'F.dropout(p=0.2) in forward_head' in text


def test_plain_timm_model_shows_no_dropout():
    text = placement_text(timm.create_model('resnet18'), 'resnet18')
    assert 'no timm-dropres dropout' in text
    assert not any(n.startswith('>') for n in _names(text))


@pytest.mark.parametrize('argv, message', [
    (['show', 'no_such_model'], "unknown model 'no_such_model'"),
    (['show', 'resnet18', '--branch-drop-pos', 'guideline'], "--branch-drop-pos needs a \\*_dropres model"),
    (['show', 'resnet18_dropres', '--drop-rate', '1'], r'drop_rate must be a number in \[0, 1\)'),
])
def test_show_bad_input(argv, message):
    with pytest.raises(SystemExit, match=message):
        main(argv)


def test_list_filters_variants_and_gives_their_pretrained_tags(capsys):
    variants = dict(list_variants('resnet50*'))
    assert 'resnet50_dropres' in variants and 'resnet50d_dropres' in variants
    assert all(name.startswith('resnet50') and name.endswith('_dropres') for name in variants)
    assert set(variants['resnet50_dropres']) == {
        tag.split('.', 1)[1] for tag in timm.list_pretrained('resnet50.*')}
    assert dict(list_variants()).keys() == set(timm.list_models('*_dropres'))

    assert main(['list', 'resnet18*']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == [n for n in timm.list_models('resnet18*') if n.endswith('_dropres')]
    assert lines[-1].startswith(f'{len(lines) - 1} variants')
    assert main(['list', 'no_such_*']) == 1
    assert "no *_dropres variant matches 'no_such_*'" in capsys.readouterr().out
