"""timm's train.py / validate.py / inference.py with the `*_dropres` variants.

The scripts live only in timm's GitHub repository (not in its wheel or sdist), so CI repeats what
they do with timm's own components: train.py's option names and defaults, its exact create_model
call and `--model-kwargs` parsing (timm.utils.ParseKwargs), its data / optimizer / scheduler / task /
EMA / checkpoint pipeline, its resume, and validate.py's rebuild from a checkpoint.
`test_real_scripts` runs the real scripts when TIMM_REPO points at a checkout of timm's repository.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from timm import utils
from timm.data import create_dataset, create_loader, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy
from timm.models import create_model, load_checkpoint, resume_checkpoint
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.task import ClassificationTask, load_task_ema_checkpoint, resume_task_checkpoint
from timm.utils import ModelEmaV3

from timm_dropres import DropResSettings

CLASSES = ('dark', 'light')
IMAGES_PER_CLASS = {'train': 8, 'validation': 4}
IMG_SIZE = 32


def train_py_parser() -> argparse.ArgumentParser:
    """The train.py options this pipeline reads, with train.py's names and defaults.

    `test_real_scripts` checks these defaults against the real train.py's parser.
    """
    p = argparse.ArgumentParser()
    p.add_argument('data', nargs='?')
    p.add_argument('--data-dir')
    p.add_argument('--dataset', default='')
    p.add_argument('--train-split', default='train')
    p.add_argument('--val-split', default='validation')
    p.add_argument('--model', default='resnet50')
    p.add_argument('--pretrained', action='store_true', default=False)
    p.add_argument('--pretrained-path', default=None)
    p.add_argument('--initial-checkpoint', default='')
    p.add_argument('--resume', default='')
    p.add_argument('--num-classes', type=int, default=None)
    p.add_argument('--gp', default=None)
    p.add_argument('--img-size', type=int, default=None)
    p.add_argument('--in-chans', type=int, default=None)
    p.add_argument('-b', '--batch-size', type=int, default=128)
    p.add_argument('--model-kwargs', nargs='*', default={}, action=utils.ParseKwargs)
    p.add_argument('--torchscript', action='store_true')
    p.add_argument('--device', default='cuda')
    p.add_argument('--opt', default='sgd')
    p.add_argument('--momentum', type=float, default=0.9)
    p.add_argument('--weight-decay', type=float, default=2e-5)
    p.add_argument('--opt-kwargs', nargs='*', default={}, action=utils.ParseKwargs)
    p.add_argument('--sched', default='cosine')
    p.add_argument('--lr', type=float, default=None)
    p.add_argument('--warmup-lr', type=float, default=1e-5)
    p.add_argument('--min-lr', type=float, default=0)
    p.add_argument('--epochs', type=int, default=300)
    p.add_argument('--warmup-epochs', type=int, default=5)
    p.add_argument('--smoothing', type=float, default=0.1)
    p.add_argument('--drop', type=float, default=0.0)
    p.add_argument('--drop-path', type=float, default=None)
    p.add_argument('--drop-block', type=float, default=None)
    p.add_argument('--bn-momentum', type=float, default=None)
    p.add_argument('--bn-eps', type=float, default=None)
    p.add_argument('--model-ema', action='store_true', default=False)
    p.add_argument('--model-ema-decay', type=float, default=0.9998)
    p.add_argument('--model-ema-warmup', action='store_true')
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('-j', '--workers', type=int, default=4)
    p.add_argument('--no-prefetcher', action='store_true', default=False)
    p.add_argument('--output', default='')
    p.add_argument('--experiment', default='')
    p.add_argument('--checkpoint-hist', type=int, default=10)
    return p


def create_model_as_train_py(args: argparse.Namespace) -> nn.Module:
    """train.py's create_model call, argument for argument."""
    in_chans = args.in_chans if args.in_chans is not None else 3
    factory_kwargs = {}
    if args.pretrained_path:
        factory_kwargs['pretrained_cfg_overlay'] = dict(file=args.pretrained_path, num_classes=-1)
    return create_model(
        args.model,
        pretrained=args.pretrained,
        in_chans=in_chans,
        num_classes=args.num_classes,
        drop_rate=args.drop,
        drop_path_rate=args.drop_path,
        drop_block_rate=args.drop_block,
        global_pool=args.gp,
        bn_momentum=args.bn_momentum,
        bn_eps=args.bn_eps,
        scriptable=args.torchscript,
        checkpoint_path=args.initial_checkpoint,
        **factory_kwargs,
        **args.model_kwargs,
    )


def validate(model: nn.Module, loader) -> dict:
    """train.py's / validate.py's evaluation: cross-entropy and top-1 over the loader."""
    loss_fn, losses, top1 = nn.CrossEntropyLoss(), utils.AverageMeter(), utils.AverageMeter()
    model.eval()
    with torch.inference_mode():
        for input, target in loader:
            output = model(input)
            losses.update(loss_fn(output, target).item(), input.shape[0])
            top1.update(utils.accuracy(output, target, topk=(1,))[0].item(), input.shape[0])
    return {'loss': losses.avg, 'top1': top1.avg}


def train_as_train_py(args: argparse.Namespace) -> dict:
    """train.py's main() on one CPU process: the same components in the same order.

    Left out are the branches these arguments do not take (distributed, AMP, mixup, NaFlex,
    distillation, gradient accumulation); `--lr` is required instead of train.py's batch-size rule.
    """
    device = torch.device(args.device)
    utils.random_seed(args.seed, 0)
    model = create_model_as_train_py(args)
    data_config = resolve_data_config(vars(args), model=model, verbose=False)
    loaders = {}
    for split, is_training in ((args.train_split, True), (args.val_split, False)):
        dataset = create_dataset(args.dataset, root=args.data_dir, split=split, is_training=is_training,
                                 batch_size=args.batch_size, seed=args.seed)
        loaders[is_training] = create_loader(
            dataset, input_size=data_config['input_size'], batch_size=args.batch_size, is_training=is_training,
            interpolation=data_config['interpolation'], mean=data_config['mean'], std=data_config['std'],
            crop_pct=None if is_training else data_config['crop_pct'], num_workers=args.workers,
            device=device, use_prefetcher=not args.no_prefetcher)

    task = ClassificationTask(model=model, criterion=LabelSmoothingCrossEntropy(smoothing=args.smoothing),
                              device=device, verbose=False)
    model = task.get_trainable_module()
    optimizer = create_optimizer_v2(model, **optimizer_kwargs(cfg=args), **args.opt_kwargs)
    resume_epoch = resume_task_checkpoint(task, args.resume, optimizer=optimizer, log_info=False) if args.resume else None
    if args.model_ema:
        task.setup_ema(decay=args.model_ema_decay, use_warmup=args.model_ema_warmup)
        if args.resume:
            load_task_ema_checkpoint(task, args.resume)

    output_dir = utils.get_outdir(args.output, args.experiment)
    saver = utils.CheckpointSaver(model=model, optimizer=optimizer, args=args, checkpoint_dir=output_dir,
                                  recovery_dir=output_dir, decreasing=False, max_history=args.checkpoint_hist,
                                  task=task)
    updates_per_epoch = len(loaders[True])
    lr_scheduler, num_epochs = create_scheduler_v2(
        optimizer, **scheduler_kwargs(args, decreasing_metric=False), updates_per_epoch=updates_per_epoch)
    start_epoch = resume_epoch or 0
    if start_epoch > 0:
        lr_scheduler.step(start_epoch)

    start = {'model': _snapshot(model.state_dict()), 'optimizer': _snapshot(optimizer.state_dict()['state'])}
    if task.has_ema():
        start['ema'] = _snapshot(task.get_trainable_module(ema=True).module.state_dict())
    history = []
    for epoch in range(start_epoch, num_epochs):
        model.train()
        num_updates, losses = epoch * updates_per_epoch, []
        for input, target in loaders[True]:
            loss = task(input, target)['loss']
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            num_updates += 1
            task.update_ema(step=num_updates)
            lr_scheduler.step_update(num_updates=num_updates)
            losses.append(loss.item())
        eval_metrics = validate(task.get_eval_model(), loaders[False])
        if task.has_ema():
            eval_metrics = validate(task.get_eval_model(ema=True), loaders[False])  # train.py ranks by EMA
        saver.save_checkpoint(epoch, metric=eval_metrics['top1'])
        lr_scheduler.step(epoch + 1, eval_metrics['top1'])
        history.append({'epoch': epoch, 'train_losses': losses, 'eval': eval_metrics})
    return {'task': task, 'optimizer': optimizer, 'history': history, 'output_dir': Path(output_dir),
            'resume_epoch': resume_epoch, 'eval_loader': loaders[False], 'start': start}


def _snapshot(state: dict) -> dict:
    """A detached copy of a (possibly nested) state dict."""
    return {k: _snapshot(v) if isinstance(v, dict) else v.clone() if torch.is_tensor(v) else v for k, v in state.items()}


def _equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        _equal_states(a[k], b[k]) if isinstance(a[k], dict) else
        torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory) -> Path:
    """train/ and validation/ ImageFolders of 32 px PNGs: dark vs light noise, learnable in a few steps."""
    root = tmp_path_factory.mktemp('data')
    rng = np.random.default_rng(0)
    for split, count in IMAGES_PER_CLASS.items():
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 96, (IMG_SIZE, IMG_SIZE, 3)) + 140 * label
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f'{i}.png')
    return root


def _args(*argv: str) -> argparse.Namespace:
    return train_py_parser().parse_args(list(argv))


@pytest.mark.parametrize('argv, expected', [
    # train.py's --drop defaults to 0.0 and is passed as drop_rate: it overrides the variant's 0.2
    ([], DropResSettings(drop_rate=0.0)),
    (['--drop', '0.2'], DropResSettings()),
    (['--drop', '0.3', '--model-kwargs', 'branch_drop_rate=0.1', 'branch_drop_pos=guideline'],
     DropResSettings(0.1, 0.3, 'guideline', 'pre_pool')),
    (['--model-kwargs', 'branch_drop_rate=0.05', 'branch_drop_pos=before_norm', 'head_drop_pos=post_pool'],
     DropResSettings(0.05, 0.0, 'before_norm', 'post_pool')),
])
def test_train_py_arguments_set_the_dropout(argv, expected):
    model = create_model_as_train_py(_args('--model', 'resnet10t_dropres', '--num-classes', '2', *argv))
    assert model.dropres_settings == expected


@pytest.mark.parametrize('base', ['resnet10t', 'resnetv2_18'])
@pytest.mark.parametrize('option', [
    [], ['--drop-path', '0.1'], ['--drop-block', '0.1'], ['--gp', 'max'], ['--torchscript'],
    ['--in-chans', '1'], ['--bn-momentum', '0.01'], ['--bn-eps', '1e-3'],
])
def test_train_py_model_options_behave_as_on_the_base_model(base, option):
    """Each model option of train.py works on a variant exactly when it works on the base model.

    At train.py's defaults (None) create_model drops them. timm's ResNet / ResNetV2 themselves
    reject bn_momentum/bn_eps (train.py: 'only works with gen_efficientnet based models') and
    ResNetV2 rejects drop_block_rate: the variants give the same error.
    """
    outcomes = {}
    for name in (base, base + '_dropres'):
        try:
            model = create_model_as_train_py(_args('--model', name, '--num-classes', '2', *option))
            outcomes[name] = ('ok', sum(p.numel() for p in model.parameters()))
        except TypeError as exc:
            outcomes[name] = ('TypeError', str(exc).split('got ')[-1])
    assert outcomes[base] == outcomes[base + '_dropres']
    if not option or option[0] in ('--drop-path', '--gp', '--torchscript', '--in-chans'):
        assert outcomes[base][0] == 'ok'


def test_pretrained_path_fine_tunes_from_base_weights(tmp_path):
    """`--pretrained --pretrained-path FILE` (train.py's local-file form of --pretrained) loads a base
    model's weights into the variant and adapts the head to --num-classes."""
    base = create_model('resnet10t')
    torch.save(base.state_dict(), tmp_path / 'resnet10t.pth')
    model = create_model_as_train_py(_args(
        '--model', 'resnet10t_dropres', '--pretrained', '--pretrained-path', str(tmp_path / 'resnet10t.pth'),
        '--num-classes', '2', '--drop', '0.2'))
    loaded, reference = model.state_dict(), base.state_dict()
    assert model.fc.out_features == 2 and model.dropres_settings == DropResSettings()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference if not k.startswith('fc.'))


@pytest.fixture(scope='module')
def trained(image_folder, tmp_path_factory) -> dict:
    """Two epochs in two runs: epoch 0, then `--resume` from its checkpoint for epoch 1."""
    out = tmp_path_factory.mktemp('output')
    command = ['--data-dir', str(image_folder), '--model', 'resnet10t_dropres', '--num-classes', '2',
               '--img-size', str(IMG_SIZE), '-b', '4', '-j', '0', '--device', 'cpu', '--lr', '0.05',
               '--warmup-epochs', '0', '--drop', '0.2', '--model-kwargs', 'branch_drop_rate=0.1',
               'branch_drop_pos=guideline', '--model-ema', '--model-ema-decay', '0.5', '--seed', '0',
               '--output', str(out)]
    first = train_as_train_py(_args(*command, '--epochs', '1', '--experiment', 'first'))
    resumed = train_as_train_py(_args(*command, '--epochs', '2', '--experiment', 'resumed',
                                      '--resume', str(first['output_dir'] / 'last.pth.tar')))
    return {'first': first, 'resumed': resumed}


def test_training_steps_update_weights_and_ema(trained):
    first = trained['first']
    (epoch,) = first['history']
    assert len(epoch['train_losses']) == 4 and all(np.isfinite(epoch['train_losses']))
    model, ema = first['task'].get_trainable_module(), first['task'].get_trainable_module(ema=True)
    assert isinstance(ema, ModelEmaV3)
    assert not _equal_states(model.state_dict(), first['start']['model']), 'training must move the weights'
    assert not _equal_states(ema.module.state_dict(), model.state_dict()), 'EMA weights lag the trained ones'
    assert model.dropres_settings == ema.module.dropres_settings == DropResSettings(0.1, 0.2, 'guideline', 'pre_pool')


def test_checkpoint_records_the_variant(trained):
    checkpoint = torch.load(trained['first']['output_dir'] / 'last.pth.tar', map_location='cpu', weights_only=False)
    assert checkpoint['arch'] == 'resnet10t_dropres' and checkpoint['epoch'] == 0
    assert checkpoint['args'].model_kwargs == {'branch_drop_rate': 0.1, 'branch_drop_pos': 'guideline'}
    assert {'state_dict', 'state_dict_ema', 'optimizer'} <= checkpoint.keys()
    assert checkpoint['state_dict'].keys() == create_model('resnet10t', num_classes=2).state_dict().keys()


def test_resume_restores_state_and_continues(trained):
    first, resumed = trained['first'], trained['resumed']
    assert resumed['resume_epoch'] == 1 and [h['epoch'] for h in resumed['history']] == [1]
    assert _equal_states(resumed['start']['model'], first['task'].get_trainable_module().state_dict())
    assert _equal_states(resumed['start']['optimizer'], first['optimizer'].state_dict()['state'])
    assert _equal_states(resumed['start']['ema'], first['task'].get_trainable_module(ema=True).module.state_dict())
    assert (resumed['output_dir'] / 'checkpoint-1.pth.tar').is_file()


def test_legacy_resume_checkpoint_reads_it(trained):
    """legacy_train.py resumes with timm.models.resume_checkpoint: the same checkpoint loads strictly."""
    first = trained['first']
    path = first['output_dir'] / 'last.pth.tar'
    saved_args = torch.load(path, map_location='cpu', weights_only=False)['args']
    model = create_model_as_train_py(saved_args)
    optimizer = create_optimizer_v2(model, **optimizer_kwargs(cfg=saved_args))
    assert resume_checkpoint(model, str(path), optimizer, log_info=False) == 1
    assert _equal_states(model.state_dict(), first['task'].get_trainable_module().state_dict())
    assert _equal_states(optimizer.state_dict()['state'], first['optimizer'].state_dict()['state'])


@pytest.mark.parametrize('use_ema', [True, False])
def test_validate_py_rebuilds_the_same_variant(trained, use_ema):
    """validate.py: create_model(--model, --model-kwargs) then load_checkpoint(--checkpoint, --use-ema).

    The checkpoint names the architecture and keeps train.py's args, so it rebuilds the variant with
    the dropout settings it was trained with, and evaluates to the accuracy recorded in training.
    """
    run = trained['resumed']
    path = run['output_dir'] / 'last.pth.tar'
    checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    saved_args = checkpoint['args']
    model = create_model(checkpoint['arch'], num_classes=saved_args.num_classes, drop_rate=saved_args.drop,
                         **saved_args.model_kwargs)
    load_checkpoint(model, str(path), use_ema=use_ema)
    assert type(model).__name__ == 'ResNetDropRes'
    assert model.dropres_settings == run['task'].get_trainable_module().dropres_settings
    metrics = validate(model, run['eval_loader'])
    expected = validate(run['task'].get_eval_model(ema=use_ema), run['eval_loader'])
    assert metrics == expected
    if use_ema:
        assert metrics['top1'] == checkpoint['metric'], 'train.py ranks checkpoints by the EMA top-1'


# ---- opt-in: the real scripts from a checkout of timm's repository ----

TIMM_REPO = os.environ.get('TIMM_REPO')
SCRIPT_ARGS = ['--model', 'resnet10t_dropres', '--num-classes', '2', '--img-size', str(IMG_SIZE), '-b', '4', '-j', '0',
               '--device', 'cpu']  # train.py's default --device is cuda
IMPORT_THEN_RUN = ('import sys, runpy, timm_dropres; sys.argv = sys.argv[1:]; '
                   'runpy.run_path(sys.argv[0], run_name="__main__")')
"""The README's fallback for validate.py / inference.py when autoload is off: import, then run the script."""
real_scripts = pytest.mark.skipif(not TIMM_REPO, reason='set TIMM_REPO to a checkout of huggingface/pytorch-image-models')


def _run_script(script: str, *argv: str, env: dict | None = None, prefix: tuple = ()) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *prefix, str(Path(TIMM_REPO, script)), *argv], capture_output=True,
                            text=True, env={**os.environ, **(env or {})}, cwd=TIMM_REPO, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope='module')
def real_training(image_folder, tmp_path_factory) -> dict:
    """The README's train command for one epoch on CPU; returns its best checkpoint."""
    out = tmp_path_factory.mktemp('real')
    _run_script('train.py', '--data-dir', str(image_folder), *SCRIPT_ARGS, '--epochs', '1', '--lr', '0.05',
                '--warmup-epochs', '0', '--drop', '0.2', '--model-kwargs', 'branch_drop_rate=0.1',
                'branch_drop_pos=guideline', '--model-ema', '--model-ema-decay', '0.5',
                '--output', str(out), '--experiment', 'real')
    path = out / 'real' / 'model_best.pth.tar'
    checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    model = create_model(checkpoint['arch'], num_classes=2, drop_rate=checkpoint['args'].drop,
                         **checkpoint['args'].model_kwargs)
    crop_pct = resolve_data_config(vars(checkpoint['args']), model=model, verbose=False)['crop_pct']
    return {'path': path, 'checkpoint': checkpoint, 'model': model, 'crop_pct': crop_pct, 'out': out}


@real_scripts
def test_real_train_py_parser_matches_the_mirror():
    parser = runpy.run_path(str(Path(TIMM_REPO, 'train.py')), run_name='timm_train')['parser']
    real, mirrored = vars(parser.parse_args([])), vars(train_py_parser().parse_args([]))
    assert {k: real[k] for k in mirrored} == mirrored, 'train_py_parser drifted from train.py'


@real_scripts
def test_real_train_py_trains_the_variant(real_training):
    assert real_training['checkpoint']['arch'] == 'resnet10t_dropres'
    assert real_training['model'].dropres_settings == DropResSettings(0.1, 0.2, 'guideline', 'pre_pool')


@real_scripts
def test_real_train_py_device_modules_fallback(image_folder, real_training):
    """With autoload off, train.py's --device-modules imports the package in every process."""
    _run_script('train.py', '--data-dir', str(image_folder), *SCRIPT_ARGS, '--epochs', '1', '--lr', '0.05',
                '--device-modules', 'timm_dropres', '--output', str(real_training['out']), '--experiment', 'fallback',
                env={'TIMM_DROPRES_AUTOLOAD': '0'})
    assert (real_training['out'] / 'fallback' / 'model_best.pth.tar').is_file()


@real_scripts
@pytest.mark.parametrize('autoload', ['1', '0'])
def test_real_validate_py_reproduces_the_training_metric(image_folder, real_training, tmp_path, autoload):
    """validate.py rebuilds the variant from --model/--model-kwargs and the checkpoint's EMA weights;
    with autoload off it runs through the README's import-then-run fallback."""
    results = tmp_path / 'validate.json'
    _run_script('validate.py', str(image_folder / 'validation'), *SCRIPT_ARGS, '--checkpoint', str(real_training['path']),
                '--use-ema', '--crop-pct', str(real_training['crop_pct']), '--model-kwargs', 'branch_drop_rate=0.1',
                'branch_drop_pos=guideline', '--results-file', str(results), '--results-format', 'json',
                env={'TIMM_DROPRES_AUTOLOAD': autoload}, prefix=() if autoload == '1' else ('-c', IMPORT_THEN_RUN))
    validated = json.loads(results.read_text())
    assert validated['model'] == 'resnet10t_dropres'
    assert validated['top1'] == pytest.approx(real_training['checkpoint']['metric'])


@real_scripts
def test_real_inference_py_predicts_with_the_variant(image_folder, real_training, tmp_path):
    pytest.importorskip('pandas', reason="timm's inference.py writes its results with pandas")
    _run_script('inference.py', str(image_folder / 'validation'), *SCRIPT_ARGS, '--checkpoint', str(real_training['path']),
                '--crop-pct', str(real_training['crop_pct']), '--topk', '1', '--include-index', '--fullname',
                '--results-dir', str(tmp_path), '--results-format', 'json')
    predictions = json.loads((tmp_path / f'resnet10t_dropres-{IMG_SIZE}.json').read_text())
    assert len(predictions) == len(CLASSES) * IMAGES_PER_CLASS['validation']
    correct = [CLASSES[p['index']] == Path(name).parent.name for name, p in predictions.items()]
    assert 100 * sum(correct) / len(correct) == pytest.approx(real_training['checkpoint']['metric'])
