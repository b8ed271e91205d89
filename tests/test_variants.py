"""The registered variants: registry entries, pretrained tags, kwargs, and errors on bad input."""
from __future__ import annotations

import math

import pytest
import timm
import torch.nn as nn
from timm.models import get_arch_pretrained_cfgs, model_entrypoint

import timm_dropres
from timm_dropres.variants import FAMILIES


def test_every_family_model_has_a_variant():
    bases = timm.list_models(module=list(FAMILIES), exclude_filters='*_dropres')
    variants = timm.list_models('*_dropres')
    assert len(bases) >= 90 and set(variants) >= {b + '_dropres' for b in bases}
    assert all(timm.is_model(v) and callable(model_entrypoint(v)) for v in variants)
    assert timm_dropres.register_variants() == timm_dropres.register_variants()  # idempotent


@pytest.mark.parametrize('base', ['resnet50', 'resnetv2_50', 'resnet18'])
def test_pretrained_tags_are_the_base_tags_with_the_variant_as_architecture(base):
    base_cfgs = get_arch_pretrained_cfgs(base)
    variant_cfgs = get_arch_pretrained_cfgs(base + '_dropres')
    assert [k.replace(base, base + '_dropres', 1) for k in base_cfgs] == list(variant_cfgs)  # default tag first
    for (base_key, base_cfg), (key, cfg) in zip(base_cfgs.items(), variant_cfgs.items()):
        assert cfg.architecture == base + '_dropres'
        assert cfg.hf_hub_id == base_cfg.hf_hub_id  # the variant downloads the base weights
        assert cfg.num_classes == base_cfg.num_classes and cfg.input_size == base_cfg.input_size
    assert set(timm.list_pretrained(base + '_dropres*')) == {
        k.replace(base, base + '_dropres', 1) for k in timm.list_pretrained(base + '.*')}


def test_tagged_variant_keeps_its_own_architecture():
    model = timm.create_model('resnet50_dropres.a1_in1k')
    assert model.pretrained_cfg['architecture'] == 'resnet50_dropres'
    assert model.pretrained_cfg['tag'] == 'a1_in1k'
    assert model.pretrained_cfg['hf_hub_id'] == 'timm/resnet50.a1_in1k'


def test_defaults_and_kwargs():
    model = timm.create_model('resnet10t_dropres')
    assert model.dropres_settings.as_kwargs() == dict(
        branch_drop_rate=0.1, drop_rate=0.2, branch_drop_pos='guideline', head_drop_pos='pre_pool')
    model = timm.create_model(
        'resnet10t_dropres', branch_drop_rate=0.3, drop_rate=0.4, branch_drop_pos='branch_end',
        head_drop_pos='post_pool', num_classes=3, in_chans=1)
    assert model.drop_rate == 0.4 and not hasattr(model, 'pre_pool_drop')  # timm's own post-pool dropout
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.3}
    assert model.num_classes == 3 and model.conv1[0].in_channels == 1


def test_apply_on_an_instance_matches_the_variant():
    applied = timm_dropres.apply(timm.create_model('resnetv2_18'), branch_drop_rate=0.2, drop_rate=0.3)
    variant = timm.create_model('resnetv2_18_dropres', branch_drop_rate=0.2, drop_rate=0.3)
    assert repr(applied) == repr(variant)
    assert applied.head.drop.p == 0  # timm's post-pool dropout switched off under pre_pool
    with pytest.raises(ValueError, match='already has dropres dropout'):
        timm_dropres.apply(applied)


@pytest.mark.parametrize('name', ['branch_drop_rate', 'drop_rate'])
@pytest.mark.parametrize('value', [-0.1, 1.0, 1.5, math.nan, '0.1', True, None])
def test_bad_rates_name_the_argument(name, value):
    kwargs = {name: value}
    with pytest.raises(ValueError, match=rf'{name} must be a number in \[0, 1\)'):
        timm_dropres.apply(timm.create_model('resnet10t'), **kwargs)
    if value is not None:  # create_model drops None kwargs, so the variant default applies
        with pytest.raises(ValueError, match=rf'{name} must be a number in \[0, 1\)'):
            timm.create_model('resnet10t_dropres', **kwargs)


@pytest.mark.parametrize('name, accepted', [
    ('branch_drop_pos', "'guideline', 'branch_end', 'after_add', 'before_norm'"),
    ('head_drop_pos', "'pre_pool', 'post_pool'"),
])
def test_bad_positions_list_the_accepted_values(name, accepted):
    with pytest.raises(ValueError, match=f"{name} must be one of {accepted}, got 'middle'"):
        timm.create_model('resnet10t_dropres', **{name: 'middle'})


def test_unknown_kwarg_is_not_swallowed():
    with pytest.raises(TypeError, match='branch_drop_prob'):
        timm.create_model('resnet10t_dropres', branch_drop_prob=0.1)


def test_apply_refuses_a_model_without_residual_blocks():
    with pytest.raises(ValueError) as err:
        timm_dropres.apply(timm.create_model('convnext_atto'))
    message = str(err.value)
    assert 'ConvNeXtBlock' in message  # the block class found
    assert all(cls.__name__ in message for cls in timm_dropres.BLOCK_SLOTS)  # and the supported ones
    assert 'branch_drop_rate=0' in message


def test_every_registered_variant_builds_with_one_dropout_per_block():
    """On the meta device (no memory, no init cost): a listed variant must also be a buildable one."""
    import torch
    from timm_dropres.placement import residual_blocks
    for name in timm.list_models('*_dropres'):
        try:
            with torch.device('meta'):
                model = timm.create_model(name)
        except NotImplementedError:  # timm <= 1.0.30 regnet init calls torch.unique, which has no meta kernel
            model = timm.create_model(name)
        blocks = list(residual_blocks(model))
        counts = {sum(isinstance(m, nn.Dropout) and m.p > 0 for m in block.modules()) for _, block, _ in blocks}
        assert blocks and counts == {1}, name


@pytest.mark.parametrize('name, model_kwargs, kwargs, message', [
    ('ghostnet_100', {}, dict(branch_drop_rate=0), 'two head dropouts would stack'),  # timm's own 0.2 post-pool
    ('resnet10t', dict(features_only=True), dict(head_drop_pos='post_pool'), "sets timm's own head dropout"),
    ('resnet10t', dict(features_only=True), {}, 'needs a model with forward_head and a global pool'),
    ('vit_tiny_patch16_224', {}, dict(branch_drop_rate=0), 'needs a model with forward_head and a global pool'),
])
def test_a_refused_model_is_left_as_it_was(name, model_kwargs, kwargs, message):
    model = timm.create_model(name, **model_kwargs)
    before = repr(model)
    with pytest.raises(ValueError, match=message):
        timm_dropres.apply(model, **kwargs)
    assert repr(model) == before and not hasattr(model, 'dropres_settings')
