"""Hub publishing and loading: the folder `push` writes, and loading it back through timm exactly.

Nothing here touches the network: huggingface_hub runs in offline mode for every test, downloads
come from a Hub cache laid out the way huggingface_hub lays it out, and uploads are checked at
huggingface_hub's API boundary (HfApi.create_repo / HfApi.upload_folder).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Dict, Mapping

import huggingface_hub
import pytest
import timm
import timm.optim
import torch
import torch.nn as nn
import yaml
from huggingface_hub import HfApi, ModelCard, constants, scan_cache_dir, try_to_load_from_cache
from huggingface_hub.file_download import repo_folder_name
from safetensors.torch import load_file, save_file
from timm.utils import CheckpointSaver, ModelEmaV3

import timm_dropres
from timm_dropres import cli, hub
from timm_dropres.settings import DropResSettings

REPO_ID = 'someone/resnet10t-dropres-test'
LABELS = ['ant', 'bee', 'cat', 'dog']
TRAINED = DropResSettings(branch_drop_rate=0.15, drop_rate=0.25, branch_drop_pos='branch_end', head_drop_pos='pre_pool')
"""Non-default settings for the trained model, so that defaults can't pass for saved values."""


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch, tmp_path_factory):
    """Every test: huggingface_hub offline with an empty cache of its own, and no Hub token anywhere."""
    cache = tmp_path_factory.mktemp('hf-cache')
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(constants, 'HF_TOKEN_PATH', str(cache / 'no-token'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HUB_CACHE', str(cache))
    for name in ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_OIDC_RESOURCE'):
        monkeypatch.delenv(name, raising=False)
    return cache


def cache_repo(cache: Path, repo_id: str, files: Mapping[str, bytes]) -> Path:
    """Put `files` into the Hub cache as huggingface_hub does after downloading them from `repo_id`:
    blobs/<hash>, snapshots/<commit>/<name> -> ../../blobs/<hash>, refs/main = <commit>."""
    storage = cache / repo_folder_name(repo_id=repo_id, repo_type='model')
    commit = hashlib.sha1(b''.join(name.encode() + data for name, data in sorted(files.items()))).hexdigest()
    snapshot = storage / 'snapshots' / commit
    snapshot.mkdir(parents=True)
    (storage / 'blobs').mkdir()
    for name, data in files.items():
        blob = storage / 'blobs' / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (storage / 'refs').mkdir()
    (storage / 'refs' / constants.DEFAULT_REVISION).write_text(commit)
    return snapshot


def folder_files(folder: Path) -> Dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def dropouts(model: nn.Module):
    return [(name, m.p) for name, m in model.named_modules() if isinstance(m, nn.Dropout)]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A few SGD steps of resnet10t_dropres at 32 px with EMA, saved as timm's train.py saves a run:
    CheckpointSaver with the run's args Namespace, and args.yaml beside the checkpoints."""
    out = tmp_path_factory.mktemp('train-run')
    args = argparse.Namespace(  # train.py's names for what it passes to create_model and data config
        model='resnet10t_dropres', pretrained=False, num_classes=len(LABELS), in_chans=None, input_size=None,
        img_size=32, gp=None, drop=TRAINED.drop_rate, drop_path=None, drop_block=None, bn_momentum=None,
        bn_eps=None, model_kwargs=dict(branch_drop_rate=TRAINED.branch_drop_rate,
                                       branch_drop_pos=TRAINED.branch_drop_pos),
        mean=None, std=None, crop_pct=None, interpolation='', dataset='', opt='sgd', lr=0.05, momentum=0.9,
        weight_decay=1e-4, epochs=1, batch_size=4, model_ema=True, model_ema_decay=0.5, eval_metric='top1', seed=0)
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=args.num_classes, drop_rate=args.drop, **args.model_kwargs)
    optimizer = timm.optim.create_optimizer_v2(model, 'sgd', lr=args.lr, momentum=args.momentum)
    ema = ModelEmaV3(model, decay=args.model_ema_decay)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model)
    (out / 'args.yaml').write_text(yaml.safe_dump(vars(args), default_flow_style=False))
    CheckpointSaver(model, optimizer, args=args, model_ema=ema, checkpoint_dir=str(out)).save_checkpoint(0, metric=37.5)
    assert not torch.equal(model.fc.weight, ema.module.fc.weight)  # so the EMA choice is observable
    return argparse.Namespace(dir=out, checkpoint=out / 'model_best.pth.tar', args=args,
                              model=model.eval(), ema=ema.module.eval())


@pytest.fixture(scope='module')
def pushed(run, tmp_path_factory):
    """`timm-dropres push --out` of the run's best checkpoint, through the console script's main()."""
    out = tmp_path_factory.mktemp('push') / 'folder'
    rc = cli.main(['push', REPO_ID, str(run.checkpoint), '--out', str(out), '--label-names', *LABELS,
                   '--dataset', 'cifar10', '--result', 'top1=37.5', '--result', 'top5=100'])
    assert rc == 0
    return out


def test_round_trip_train_checkpoint_push_then_hf_hub_load(run, pushed, _offline_hub):
    """Done-when: trained, checkpointed as train.py does, pushed with --out, loaded through `hf-hub:`."""
    snapshot = cache_repo(_offline_hub, REPO_ID, folder_files(pushed))
    assert try_to_load_from_cache(REPO_ID, 'config.json') == str(snapshot / 'config.json')

    loaded = timm.create_model(f'hf-hub:{REPO_ID}', pretrained=True).eval()

    assert loaded.pretrained_cfg['architecture'] == 'resnet10t_dropres'
    assert loaded.dropres_settings == TRAINED
    assert dropouts(loaded) == dropouts(run.ema)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), run.ema(x))  # the checkpoint's EMA weights, as timm prefers them
        assert not torch.equal(loaded(x), run.model(x))
    assert loaded.pretrained_cfg['label_names'] == LABELS


def test_local_dir_load_is_the_same_model(run, pushed):
    loaded = hub.create_model(f'local-dir:{pushed}', pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), run.ema(x))
    assert loaded.dropres_settings == TRAINED


def test_folder_holds_the_variant_config_and_weights(run, pushed):
    assert sorted(folder_files(pushed)) == sorted(hub.FOLDER_FILES)
    config = json.loads((pushed / 'config.json').read_text())
    assert config['architecture'] == 'resnet10t_dropres'
    assert config['num_classes'] == 4 and config['label_names'] == LABELS
    assert {k: config['model_args'][k] for k in (*TRAINED.as_kwargs(), 'num_classes')} == {
        **TRAINED.as_kwargs(), 'num_classes': 4}
    cfg = config['pretrained_cfg']
    assert cfg['input_size'] == [3, 32, 32]  # the run's --img-size, via timm's resolve_data_config
    assert 'tag' not in cfg and 'hf_hub_id' not in cfg  # the base weights' identity does not describe these
    weights = load_file(pushed / 'model.safetensors')
    assert weights.keys() == run.ema.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in run.ema.state_dict().items())


def test_model_card_front_matter_and_body(pushed):
    card = ModelCard.load(pushed / 'README.md')
    meta = card.data.to_dict()
    assert meta['library_name'] == 'timm' and meta['license'] == 'apache-2.0'
    assert {'dropres', 'timm', 'image-classification'} <= set(meta['tags'])
    assert meta['datasets'] == ['cifar10'] and meta['metrics'] == ['accuracy']
    (result,) = meta['model-index'][0]['results']
    assert result['dataset'] == {'name': 'cifar10', 'type': 'cifar10'}
    assert [(m['type'], m['name'], m['value']) for m in result['metrics']] == [
        ('accuracy', 'Top-1 accuracy', 37.5), ('accuracy', 'Top-5 accuracy', 100.0)]
    assert 'base_model' not in meta  # trained from scratch (--pretrained not set)
    body = card.text
    assert "| `BasicBlock` | 4 | `drop_path` | `layer1.0.drop_path` |" in body  # branch_end slot of BasicBlock
    assert "`nn.Dropout(p=0.15)`" in body and "branch_drop_pos='branch_end'" in body
    assert "Head: `p=0.25`, `head_drop_pos='pre_pool'`" in body
    assert '| `lr` | `0.05` |' in body and '| `opt` | `sgd` |' in body
    assert 'EMA weights of `model_best.pth.tar` (epoch 0, top1 37.5' in body
    assert "timm.create_model('hf-hub:someone/resnet10t-dropres-test', pretrained=True)" in body
    assert 'pip install timm-dropres' in body


def test_fine_tuned_run_names_its_base_model_on_the_card(run, tmp_path):
    args = dict(vars(run.args), model='resnet10t_dropres.c3_in1k', pretrained=True)
    (tmp_path / 'args.yaml').write_text(yaml.safe_dump(args))
    torch.save({'state_dict': run.model.state_dict()}, tmp_path / 'last.pth.tar')  # no 'args': args.yaml is used
    hub.save_for_hub(tmp_path / 'last.pth.tar', tmp_path / 'out', REPO_ID)
    assert ModelCard.load(tmp_path / 'out' / 'README.md').data.base_model == 'timm/resnet10t.c3_in1k'
    loaded = hub.create_model(f'local-dir:{tmp_path / "out"}', pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), run.model(x))
    assert loaded.dropres_settings == TRAINED


class _Recorder:
    """Stands in for the two HfApi calls that reach the Hub, recording what they would send."""

    def __init__(self):
        self.calls = []

    def create_repo(self, api, repo_id, **kwargs):
        self.calls.append(('create_repo', repo_id, kwargs, api.token))
        return huggingface_hub.RepoUrl(f'https://huggingface.co/{repo_id}')

    def upload_folder(self, api, **kwargs):
        self.calls.append(('upload_folder', kwargs.pop('repo_id'), kwargs, folder_files(kwargs.pop('folder_path'))))
        return huggingface_hub.CommitInfo(
            commit_url=f'https://huggingface.co/{REPO_ID}/commit/0', commit_message=kwargs['commit_message'],
            commit_description='', oid='0' * 40)


def test_upload_sends_exactly_the_out_folder(run, pushed, monkeypatch, capsys, tmp_path):
    recorder = _Recorder()
    monkeypatch.setattr(HfApi, 'create_repo', lambda self, repo_id, **kw: recorder.create_repo(self, repo_id, **kw))
    monkeypatch.setattr(HfApi, 'upload_folder', lambda self, **kw: recorder.upload_folder(self, **kw))
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))

    rc = cli.main(['push', REPO_ID, str(run.checkpoint), '--label-names', *LABELS, '--dataset', 'cifar10',
                   '--result', 'top1=37.5', '--result', 'top5=100', '--token', 'hf_test', '--private',
                   '--revision', 'dev', '--commit-message', 'first weights'])

    assert rc == 0
    (create, repo_id, create_kwargs, token), (upload, upload_repo, upload_kwargs, files) = recorder.calls
    assert (create, repo_id, token, create_kwargs) == ('create_repo', REPO_ID, 'hf_test',
                                                       {'private': True, 'exist_ok': True})
    assert (upload, upload_repo) == ('upload_folder', REPO_ID)
    assert upload_kwargs == {'revision': 'dev', 'create_pr': False, 'commit_message': 'first weights'}
    assert files == folder_files(pushed)  # byte for byte what --out wrote
    assert f'https://huggingface.co/{REPO_ID}/commit/0' in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # the upload folder is gone


@pytest.mark.parametrize('token, error, advice', [
    (None, 'LocalTokenNotFoundError', 'hf auth login'),
    ('hf_test', 'OfflineModeIsEnabled', 'unset HF_HUB_OFFLINE'),
])
def test_upload_failure_is_huggingface_hubs_error_plus_what_to_do(run, tmp_path, monkeypatch, token, error, advice):
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    source = hub.load_checkpoint(run.checkpoint)
    with pytest.raises(hub.UploadError) as info:
        hub.push_to_hub(source, REPO_ID, token=token)
    message = str(info.value)
    assert type(info.value.__cause__).__name__ == error
    assert error in message and advice in message
    assert str(info.value.__cause__) in message
    assert list(tmp_path.iterdir()) == []


def test_missing_token_through_the_cli(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    assert cli.main(['push', REPO_ID, str(run.checkpoint)]) == 1
    err = capsys.readouterr().err
    assert 'LocalTokenNotFoundError' in err and 'HF_TOKEN' in err and 'hf auth login' in err
    assert list(tmp_path.iterdir()) == []


def test_dry_run_lists_the_folder_and_leaves_nothing(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert cli.main(['push', REPO_ID, str(run.checkpoint), '--dry-run']) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ['README.md', 'config.json', 'model.safetensors']
    assert '"branch_drop_pos": "branch_end"' in out
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_no_out_folder(run, tmp_path, monkeypatch):
    real_save = hub.save_for_hf

    @functools.wraps(real_save)
    def save_then_fail(model, folder, **kwargs):
        real_save(model, folder, **kwargs)
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(hub, 'save_for_hf', save_then_fail)
    with pytest.raises(OSError, match='No space left'):
        hub.save_for_hub(run.checkpoint, tmp_path / 'out', REPO_ID)
    assert list(tmp_path.iterdir()) == []


def test_out_refuses_a_non_empty_folder(run, tmp_path, capsys):
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'keep.txt').write_text('mine')
    assert cli.main(['push', REPO_ID, str(run.checkpoint), '--out', str(tmp_path / 'out')]) == 1
    assert '--out' in capsys.readouterr().err
    assert folder_files(tmp_path / 'out') == {'keep.txt': b'mine'}


def test_apply_on_a_base_model_is_pushed_as_its_variant(tmp_path):
    model = timm_dropres.apply(timm.create_model('resnet10t', num_classes=3), branch_drop_rate=0.3,
                               branch_drop_pos='before_norm', head_drop_pos='post_pool', drop_rate=0.1).eval()
    hub.save_for_hub(model, tmp_path / 'out', REPO_ID, data_config={'input_size': (3, 48, 48)})
    config = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert config['architecture'] == 'resnet10t_dropres'
    assert config['pretrained_cfg']['input_size'] == [3, 48, 48]
    loaded = hub.create_model(f'local-dir:{tmp_path / "out"}', pretrained=True).eval()
    assert loaded.dropres_settings == model.dropres_settings and dropouts(loaded) == dropouts(model)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize('model_name, hub_id', [
    ('resnet10t_dropres.c3_in1k', 'timm/resnet10t.c3_in1k'),
    ('resnetv2_18_dropres', 'timm/resnetv2_18.ra4_e3600_r224_in1k'),
])
def test_base_weight_tag_loads_the_base_repo_from_the_hub_cache(_offline_hub, model_name, hub_id):
    base_name = model_name.split('.')[0].replace('_dropres', '')
    base = timm.create_model(base_name).eval()
    snapshot = cache_repo(_offline_hub, hub_id, {'model.safetensors': _safetensors_bytes(base.state_dict())})
    cached = scan_cache_dir(_offline_hub)  # huggingface_hub reads the layout as its own
    assert [(r.repo_id, [f.file_name for f in next(iter(r.revisions)).files]) for r in cached.repos] == [
        (hub_id, ['model.safetensors'])]
    assert snapshot.exists()

    variant = timm.create_model(model_name, pretrained=True).eval()

    assert all(torch.equal(variant.state_dict()[k], v) for k, v in base.state_dict().items())
    assert variant.dropres_settings == DropResSettings()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(variant(x), base(x))


def _safetensors_bytes(state_dict) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.contiguous() for k, v in state_dict.items()}, f'{tmp}/w.safetensors')
        return Path(f'{tmp}/w.safetensors').read_bytes()


def test_unregistered_architecture_says_to_install_timm_dropres(pushed, tmp_path):
    folder = tmp_path / 'future'
    folder.mkdir()
    for name, data in folder_files(pushed).items():
        (folder / name).write_bytes(data)
    config = json.loads((folder / 'config.json').read_text())
    config['architecture'] = 'resnet999_dropres'
    (folder / 'config.json').write_text(json.dumps(config))

    with pytest.raises(RuntimeError, match=r'Unknown model \(resnet999_dropres\)'):
        timm.create_model(f'local-dir:{folder}')  # timm's own words, which this wraps
    with pytest.raises(hub.UnknownArchitectureError) as info:
        hub.create_model(f'local-dir:{folder}', pretrained=True)
    message = str(info.value)
    assert "'resnet999_dropres'" in message and 'pip install timm-dropres' in message
    assert 'TIMM_DROPRES_AUTOLOAD' in message and isinstance(info.value, RuntimeError)
    with pytest.raises(hub.UnknownArchitectureError) as info:
        hub.create_model('not_a_model_at_all')
    assert 'timm-dropres' not in str(info.value)


def test_checkpoint_that_does_not_fit_names_missing_and_unexpected_keys(run, tmp_path, capsys):
    rc = cli.main(['push', REPO_ID, str(run.checkpoint), '--out', str(tmp_path / 'o'), '--model', 'resnet14t_dropres'])
    assert rc == 1
    err = capsys.readouterr().err
    assert 'missing keys' in err and 'layer1.0.conv3.weight' in err  # Bottleneck keys resnet10t lacks
    assert 'shape mismatches' in err and 'layer1.0.conv1.weight' in err
    assert list(tmp_path.iterdir()) == []


def test_num_classes_mismatch_is_named(run, tmp_path, capsys):
    rc = cli.main(['push', REPO_ID, str(run.checkpoint), '--out', str(tmp_path / 'o'), '--model-kwargs', 'num_classes=5'])
    assert rc == 1
    assert 'fc.weight (4, 512) vs (5, 512)' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


class _Boom:
    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran():
    _Boom.ran = True


def test_pickle_with_unknown_objects_is_refused_unexecuted(tmp_path):
    path = tmp_path / 'bad.pth.tar'
    torch.save({'state_dict': {}, 'args': argparse.Namespace(model='resnet10t_dropres'), 'extra': _Boom()}, path)
    before = set(map(str, torch.serialization.get_safe_globals()))
    with pytest.raises(ValueError, match='weights_only=True'):
        hub.load_checkpoint(path)
    assert not _Boom.ran
    assert set(map(str, torch.serialization.get_safe_globals())) == before  # the Namespace allowance is scoped
    with pytest.raises(pickle.UnpicklingError):  # the file really needs an unsafe load
        torch.load(path, weights_only=True)


@pytest.mark.parametrize('argv, message', [
    (['--result', 'top1=high'], "argument --result: expected METRIC=NUMBER"),
    (['--out', 'x', '--dry-run'], 'argument --dry-run: not allowed with argument --out'),
])
def test_bad_cli_arguments_are_named_by_argparse(run, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        cli.main(['push', REPO_ID, str(run.checkpoint), *argv])
    assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize('argv, message', [
    (['--model-kwargs', 'branch_drop_pos=middle'], "branch_drop_pos must be one of 'guideline', 'branch_end'"),
    (['--label-names', 'a', 'b'], 'label_names (--label-names) has 2 names; the model has 4 classes'),
    (['--result', 'top1=1'], '--result needs --dataset'),
    (['--model', 'resnet10t'], "'resnet10t' is not a timm-dropres variant"),
])
def test_bad_values_name_the_argument_and_write_nothing(run, tmp_path, capsys, argv, message):
    rc = cli.main(['push', REPO_ID, str(run.checkpoint), '--out', str(tmp_path / 'o'), *argv])
    assert rc == 1 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_repo_id_must_be_org_and_name(run, tmp_path, capsys):
    assert cli.main(['push', 'just-a-name', str(run.checkpoint), '--out', str(tmp_path / 'o')]) == 1
    assert 'repo_id must be ORG/NAME' in capsys.readouterr().err
