"""Publish `*_dropres` models on the Hugging Face Hub, and load them back as exactly that variant.

The folder is timm's own export (timm.models.save_for_hf: model.safetensors + config.json) plus a
model card. config.json names the registered variant as `architecture` and holds every dropres
kwarg in `model_args`, which timm's `hf-hub:`/`local-dir:` loaders pass back to the variant's
entrypoint. timm (1.0.31) leaves drop rates out of the `model_args` it records, so they are passed
explicitly. The folder is built once and either moved into place (`out_dir`) or uploaded with
huggingface_hub, so a dry run writes exactly what an upload sends.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import inspect
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn as nn
import yaml
from huggingface_hub import HfApi
from huggingface_hub.utils import LocalTokenNotFoundError, OfflineModeIsEnabled, validate_repo_id
from timm.data import resolve_data_config
from timm.layers import SelectAdaptivePool2d
from timm.models import load_state_dict, save_for_hf, split_model_name_tag

from .model_card import TrainingRecord, model_card
from .settings import DropResSettings
from .variants import SUFFIX, variant_name

FOLDER_FILES = ('config.json', 'model.safetensors', 'README.md')
"""What a pushed folder holds: timm's safetensors export, its config and the model card."""

TRAIN_ARG_MODEL_KWARGS = {'num_classes': 'num_classes', 'drop': 'drop_rate', 'gp': 'global_pool',
                          'bn_momentum': 'bn_momentum', 'bn_eps': 'bn_eps'}
"""train.py argument -> the create_model kwarg train.py passes it as (plus in_chans and --model-kwargs).
drop_path/drop_block are left out: they hold no parameters, act only in training, and timm's export
does not record them either."""

PathLike = Union[str, os.PathLike]


class HubError(RuntimeError):
    """A push or load that cannot go on; the message says what to do."""


class UnknownArchitectureError(HubError):
    """A model name or config names an architecture that is not registered in this process."""


class UploadError(HubError):
    """huggingface_hub refused or could not reach the Hub; nothing was left on disk."""


@dataclass
class LoadedCheckpoint:
    """A variant rebuilt from a timm train.py checkpoint, with what the run recorded about itself."""

    model: nn.Module
    training: TrainingRecord
    data_config: Optional[Dict[str, Any]] = None  # the run's eval preprocessing (resolve_data_config)


def create_model(model_name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm.create_model, with an unregistered architecture explained (e.g. from an `hf-hub:` config).

    timm only says 'Unknown model (name)'; a `*_dropres` name there means the plugin that registers
    it is missing, off, or older than the config.
    """
    try:
        return timm.create_model(model_name, pretrained=pretrained, **kwargs)
    except RuntimeError as e:
        match = re.fullmatch(r'Unknown model \((.*)\)', str(e))
        if match is None:
            raise
        raise UnknownArchitectureError(_unknown_architecture_message(match.group(1), model_name)) from e


def _unknown_architecture_message(architecture: str, requested: str) -> str:
    source = f' (named by the config of {requested!r})' if requested != architecture else ''
    message = f'Unknown model {architecture!r}{source}: no such architecture is registered with timm.'
    if architecture.endswith(SUFFIX):
        from . import __version__
        message += (
            f' It is a timm-dropres variant. Install timm-dropres (`pip install timm-dropres`) and either '
            f'`import timm_dropres` before creating the model or leave its timm plugin\'s autoload on '
            f'(unset TIMM_DROPRES_AUTOLOAD or set it to 1). timm-dropres {__version__} with timm '
            f'{timm.__version__} is installed here and does not register it: upgrade timm-dropres '
            f'(`pip install -U timm-dropres`), or timm if {architecture[:-len(SUFFIX)]!r} is newer than it.')
    return message


def load_checkpoint(
        checkpoint: PathLike,
        model_name: Optional[str] = None,
        model_kwargs: Optional[Mapping[str, Any]] = None,
        args_path: Optional[PathLike] = None,
        use_ema: bool = True,
) -> LoadedCheckpoint:
    """Rebuild the variant that a timm train.py checkpoint (CheckpointSaver) holds, weights loaded.

    The architecture and its kwargs come from the run's arguments, as train.py passed them to
    create_model: `args_path` if given, else the checkpoint's own 'args', else the run's
    args.yaml next to the checkpoint. `model_name` / `model_kwargs` override them (needed for a
    bare state dict or .safetensors file with no args.yaml). The EMA weights are used when the
    checkpoint has them and `use_ema` is set, as timm's load_checkpoint does.

    Pickles are read with torch.load(weights_only=True). train.py stores its argparse.Namespace in
    'args', so that one class is allowed for the duration of the read (the same allowance timm's
    own checkpoint loader makes); nothing else is.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint {str(path)!r} is not a file')
    meta = {} if path.suffix == '.safetensors' else _read_checkpoint(path)
    train_args = _train_args(meta, path, args_path)
    architecture = model_name or train_args.get('model')
    if not architecture:
        raise ValueError(
            f'cannot tell the architecture of {str(path)!r}: it has no train.py args and there is no args.yaml '
            f'next to it. Name it with model_name (CLI: --model), e.g. resnet50_dropres.')
    architecture, _ = split_model_name_tag(architecture)  # train.py's --model may carry a pretrained tag
    if not architecture.endswith(SUFFIX):
        raise ValueError(f'{architecture!r} is not a timm-dropres variant (*{SUFFIX}); push publishes those. '
                         f'Name the architecture with model_name (CLI: --model), e.g. {variant_name(architecture)!r}')
    kwargs = _train_model_kwargs(train_args)
    kwargs.update(model_kwargs or {})
    # the base weights' tag does not describe these weights
    model = create_model(architecture, pretrained_cfg_overlay=dict(tag=None), **kwargs)
    state_dict = load_state_dict(str(path), use_ema=use_ema, weights_only=True)
    _check_keys(model, state_dict, path, architecture)
    model.load_state_dict(state_dict)
    model.eval()
    training = TrainingRecord(
        checkpoint=path.name,
        args=train_args,
        epoch=meta.get('epoch'),
        metric=meta.get('metric'),
        ema=use_ema and any(meta.get(k) is not None for k in ('state_dict_ema', 'model_ema')),
    )
    data_config = resolve_data_config(train_args, model=model) if train_args else None
    return LoadedCheckpoint(model=model, training=training, data_config=data_config)


def _read_checkpoint(path: Path) -> Dict[str, Any]:
    allow = getattr(torch.serialization, 'safe_globals', None)
    try:
        with allow([argparse.Namespace]) if allow else contextlib.nullcontext():
            checkpoint = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f'{str(path)!r} holds objects that torch.load(weights_only=True) refuses to unpickle ({e}). '
            f'timm-dropres never loads pickles unsafely: export the weights with timm\'s clean_checkpoint.py '
            f'(--safetensors) and pass the architecture with model_name (CLI: --model).') from e
    return checkpoint if isinstance(checkpoint, dict) else {}


def _train_args(meta: Mapping[str, Any], checkpoint: Path, args_path: Optional[PathLike]) -> Dict[str, Any]:
    if args_path is not None:
        return _read_args_yaml(Path(args_path))
    if isinstance(meta.get('args'), argparse.Namespace):
        return dict(vars(meta['args']))
    if isinstance(meta.get('args'), dict):
        return dict(meta['args'])
    beside = checkpoint.with_name('args.yaml')
    return _read_args_yaml(beside) if beside.is_file() else {}


def _read_args_yaml(path: Path) -> Dict[str, Any]:
    with path.open(encoding='utf-8') as f:
        args = yaml.safe_load(f)
    if not isinstance(args, dict):
        raise ValueError(f'{str(path)!r} is not a train.py args.yaml (a mapping of argument names to values)')
    return args


def _train_model_kwargs(train_args: Mapping[str, Any]) -> Dict[str, Any]:
    """The create_model kwargs train.py built the model with (None values are dropped, as create_model does)."""
    kwargs = {kw: train_args[arg] for arg, kw in TRAIN_ARG_MODEL_KWARGS.items() if train_args.get(arg) is not None}
    if train_args.get('in_chans') is not None:
        kwargs['in_chans'] = train_args['in_chans']
    elif train_args.get('input_size') is not None:
        kwargs['in_chans'] = train_args['input_size'][0]
    kwargs.update(train_args.get('model_kwargs') or {})
    return kwargs


def _check_keys(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path, architecture: str) -> None:
    expected = model.state_dict()
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    reshaped = sorted(
        f'{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}'
        for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape)
    if missing or unexpected or reshaped:
        problems = [f'{label} ({len(keys)}): {_head(keys)}'
                    for label, keys in (('missing keys', missing), ('unexpected keys', unexpected),
                                        ('shape mismatches (checkpoint vs model)', reshaped)) if keys]
        raise ValueError(
            f'{str(path)!r} does not fit {architecture} built with the run\'s arguments; '
            + '; '.join(problems) + '. Check the architecture (--model) and num_classes.')


def _head(keys: Sequence[str], n: int = 8) -> str:
    return ', '.join(keys[:n]) + (f', ... ({len(keys) - n} more)' if len(keys) > n else '')


def save_for_hub(
        source: Union[nn.Module, LoadedCheckpoint, PathLike],
        out_dir: PathLike,
        repo_id: str,
        **export: Any,
) -> Path:
    """Write the folder that `push_to_hub` would upload for `repo_id` into `out_dir`; upload nothing.

    `source` and `export` are as in `write_folder`. The folder is written beside `out_dir` and
    renamed into place, so a failure leaves no `out_dir` behind. `out_dir` must not exist or be empty.
    """
    source = _as_source(source)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f'out_dir (--out) {str(out_dir)!r} exists and is not an empty folder; '
                              f'pick a new path or remove it')
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f'.{out_dir.name}.partial-{uuid.uuid4().hex[:8]}')
    staging.mkdir()
    try:
        write_folder(source, staging, repo_id, **export)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def push_to_hub(
        source: Union[nn.Module, LoadedCheckpoint, PathLike],
        repo_id: str,
        *,
        token: Optional[str] = None,
        private: bool = False,
        revision: Optional[str] = None,
        create_pr: bool = False,
        commit_message: str = 'Add timm-dropres model',
        **export: Any,
) -> Any:
    """Upload the `write_folder` folder to `repo_id` (created if missing); return huggingface_hub's CommitInfo.

    `source` and `export` are as in `write_folder`. These are the calls timm's push_to_hf_hub
    makes (save_for_hf, HfApi.create_repo, HfApi.upload_folder), but the folder is written once
    and sent as it is, card included: timm skips its card when the repo has one, and this card is
    what says where the dropout sits. The folder is a temporary directory, removed whatever happens.
    """
    source = _as_source(source)
    with tempfile.TemporaryDirectory(prefix='timm-dropres-push-') as folder:
        write_folder(source, Path(folder), repo_id, **export)
        # token=True: huggingface_hub raises LocalTokenNotFoundError before any request when none is set
        api = HfApi(token=token if token is not None else True, library_name='timm',
                    library_version=timm.__version__)
        try:
            repo = api.create_repo(repo_id, private=private, exist_ok=True)
            return api.upload_folder(repo_id=repo.repo_id, folder_path=folder, revision=revision,
                                     create_pr=create_pr, commit_message=commit_message)
        except Exception as e:  # everything from the two Hub calls: local work is done and cleaned up
            raise UploadError(_upload_failure_message(repo_id, e)) from e


def _upload_failure_message(repo_id: str, error: Exception) -> str:
    status = getattr(getattr(error, 'response', None), 'status_code', None)
    later = f'or write the folder with --out DIR (save_for_hub) and upload it later with `hf upload {repo_id} DIR`'
    if isinstance(error, LocalTokenNotFoundError):
        todo = 'log in with `hf auth login`, or set HF_TOKEN, or pass a token with write access (--token)'
    elif isinstance(error, OfflineModeIsEnabled):
        todo = f'unset HF_HUB_OFFLINE to upload, {later}'
    elif status in (401, 403):
        todo = (f'the Hub refused the token: use one with write access to {repo_id.split("/")[0]!r} '
                f'(`hf auth whoami` shows who you are; `hf auth login` to change it)')
    else:
        todo = f'check the network connection and HF_ENDPOINT, {later}'
    return f'upload to {repo_id} failed: {type(error).__name__}: {error}\nWhat to do: {todo}.'


def _as_source(source: Union[nn.Module, LoadedCheckpoint, PathLike]) -> Union[nn.Module, LoadedCheckpoint]:
    return source if isinstance(source, (nn.Module, LoadedCheckpoint)) else load_checkpoint(source)


def write_folder(
        source: Union[nn.Module, LoadedCheckpoint],
        folder: Path,
        repo_id: str,
        *,
        label_names: Optional[Sequence[str]] = None,
        data_config: Optional[Mapping[str, Any]] = None,
        license: str = 'apache-2.0',
        datasets: Sequence[str] = (),
        results: Optional[Mapping[str, float]] = None,
) -> None:
    """Write model.safetensors, config.json and README.md for `repo_id` into the existing `folder`.

    Args:
        source: a model with the dropres rule (a `*_dropres` variant, or a model passed through
            `timm_dropres.apply`), or a `load_checkpoint` result (its run goes on the card).
        label_names: class names, one per class (config.json `label_names`).
        data_config: the preprocessing the weights expect (input_size, mean, std, crop_pct, ...);
            a checkpoint's defaults to its run's.
        license, datasets, results: model card front matter; `results` ({'top1': 76.1}) are on `datasets[0]`.
    """
    _check_repo_id(repo_id)
    model = source.model if isinstance(source, LoadedCheckpoint) else source
    training = source.training if isinstance(source, LoadedCheckpoint) else None
    if data_config is None and isinstance(source, LoadedCheckpoint):
        data_config = source.data_config
    settings = _settings_of(model)
    architecture = _variant_architecture(model)
    model_config: Dict[str, Any] = {'architecture': architecture}
    if label_names is not None:
        if len(label_names) != model.num_classes:
            raise ValueError(f'label_names (--label-names) has {len(label_names)} names; the model has '
                             f'{model.num_classes} classes')
        model_config['label_names'] = list(label_names)
    model_args = {**_reconstruction_args(model), **settings.as_kwargs()}
    card = model_card(model, repo_id, architecture, license=license, datasets=datasets, results=results,
                      training=training)  # before any file: a bad card argument writes nothing
    _save_for_hf(model, folder, model_config, model_args, dict(data_config) if data_config else None)
    (folder / 'README.md').write_text(card, encoding='utf-8')
    _check_rebuilds(model, folder, architecture)


def _check_repo_id(repo_id: str) -> None:
    validate_repo_id(repo_id)  # huggingface_hub's own rules, raises HFValidationError (a ValueError)
    if repo_id.count('/') != 1:
        raise ValueError(f'repo_id must be ORG/NAME (the card tells users to load hf-hub:ORG/NAME), got {repo_id!r}')


def _settings_of(model: nn.Module) -> DropResSettings:
    settings = getattr(model, 'dropres_settings', None)
    if not isinstance(settings, DropResSettings):
        raise ValueError(f'{type(model).__name__} has no dropres dropout: push a *_dropres variant '
                         f'(timm.create_model(\'resnet50_dropres\')) or a model passed through timm_dropres.apply')
    return settings


def _variant_architecture(model: nn.Module) -> str:
    """The registered `*_dropres` name that rebuilds `model` (an apply()-ed base maps to its variant)."""
    architecture = model.pretrained_cfg.get('architecture') or ''
    name = architecture if architecture.endswith(SUFFIX) else variant_name(architecture)
    if not timm.is_model(name):
        raise ValueError(f'{type(model).__name__} (pretrained_cfg architecture {architecture!r}) has no registered '
                         f'*_dropres variant to be rebuilt as; registered: timm.list_models(\'*{SUFFIX}\')')
    return name


def _reconstruction_args(model: nn.Module) -> Dict[str, Any]:
    """num_classes, plus what an older timm does not record itself (feature-detected, not version-compared).

    timm >= 1.0.31 records the factory kwargs and the current in_chans / num_classes / global_pool
    (timm.models.get_model_args); timm 1.0.29 writes only the model_args it is given.
    """
    args: Dict[str, Any] = {'num_classes': model.num_classes}
    if hasattr(timm.models, 'get_model_args'):
        return args
    first_conv = model.pretrained_cfg.get('first_conv')
    in_chans = getattr(model.get_submodule(first_conv), 'in_channels', None) if first_conv else None
    if in_chans is not None:
        args['in_chans'] = in_chans
    pool = next((m for m in model.modules() if isinstance(m, SelectAdaptivePool2d)), None)
    if pool is not None:
        args['global_pool'] = pool.pool_type
    return args


def _save_for_hf(
        model: nn.Module,
        folder: Path,
        model_config: Dict[str, Any],
        model_args: Dict[str, Any],
        data_config: Optional[Dict[str, Any]],
) -> None:
    """timm's save_for_hf, safetensors only; `data_config` goes where this timm takes it."""
    if data_config is None or 'data_config' in inspect.signature(save_for_hf).parameters:
        extra = {'data_config': data_config} if data_config else {}
        save_for_hf(model, folder, model_config=model_config, model_args=model_args, safe_serialization=True, **extra)
        return
    # timm without save_for_hf(data_config=): it exports model.pretrained_cfg, so overlay it during the save
    overlay = dict(data_config)
    if 'input_size' in overlay:
        overlay.update(test_input_size=None, pool_size=None)  # the base's test-time size does not apply
    if 'crop_pct' in overlay:
        overlay['test_crop_pct'] = None
    with _overlaid_pretrained_cfg(model, overlay):
        save_for_hf(model, folder, model_config=model_config, model_args=model_args, safe_serialization=True)


@contextlib.contextmanager
def _overlaid_pretrained_cfg(model: nn.Module, overlay: Mapping[str, Any]) -> Iterator[None]:
    original = model.pretrained_cfg
    model.pretrained_cfg = {**original, **overlay}
    try:
        yield
    finally:
        model.pretrained_cfg = original


def _check_rebuilds(model: nn.Module, folder: Path, architecture: str) -> None:
    """Load the folder back with timm (`local-dir:`) and require the same variant, dropout and tensors.

    Same dropout modules + same parameters and buffers = the same eval outputs, on any device; the
    check catches a timm that drops a model arg before anything leaves this machine.
    """
    try:
        rebuilt = create_model(f'local-dir:{folder}', pretrained=True)
    except Exception as e:
        raise HubError(f'the exported folder does not load with timm {timm.__version__}: {type(e).__name__}: {e}') from e
    problems = []
    if rebuilt.pretrained_cfg.get('architecture') != architecture:
        problems.append(f'architecture {rebuilt.pretrained_cfg.get("architecture")!r} != {architecture!r}')
    if getattr(rebuilt, 'dropres_settings', None) != model.dropres_settings:
        problems.append(f'settings {getattr(rebuilt, "dropres_settings", None)} != {model.dropres_settings}')
    if _dropout_layout(rebuilt) != _dropout_layout(model):
        problems.append('the dropout modules differ')
    saved, current = rebuilt.state_dict(), model.state_dict()
    if saved.keys() != current.keys() or any(not torch.equal(saved[k], current[k].cpu()) for k in saved):
        problems.append('the weights differ')
    if problems:
        raise HubError(f'the exported folder does not rebuild the model: {"; ".join(problems)}. '
                       f'This timm ({timm.__version__}) may not support the model\'s constructor arguments.')


def _dropout_layout(model: nn.Module) -> List[Tuple[str, float]]:
    return [(name, m.p) for name, m in model.named_modules() if isinstance(m, nn.Dropout)]


# ---------------------------------------------------------------------------------------------
# `timm-dropres push`


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'push', help='publish a train.py checkpoint of a *_dropres model to the Hugging Face Hub',
        description='Publish a timm train.py checkpoint of a *_dropres model to the Hugging Face Hub: '
                    'model.safetensors, config.json (timm format) and a model card. With --out or --dry-run '
                    'nothing is uploaded.')
    parser.add_argument('repo_id', metavar='ORG/NAME', help='Hub model repository (created if missing)')
    parser.add_argument('checkpoint', help='train.py checkpoint (model_best.pth.tar, last.pth.tar, ...), '
                                           'a state dict .pth or a .safetensors file')
    parser.add_argument('--model', dest='model_name', metavar='NAME',
                        help='architecture, e.g. resnet50_dropres (default: the run\'s --model)')
    parser.add_argument('--args', dest='args_path', metavar='ARGS_YAML',
                        help='the run\'s args.yaml (default: the checkpoint\'s own args, else args.yaml beside it)')
    parser.add_argument('--model-kwargs', nargs='+', default=[], metavar='KEY=VALUE', type=_key_value,
                        help='create_model kwargs over the run\'s, e.g. branch_drop_rate=0.1 (values as Python '
                             'literals, as train.py parses them)')
    parser.add_argument('--no-ema', dest='use_ema', action='store_false',
                        help='take the checkpoint\'s state_dict even when it has EMA weights')
    parser.add_argument('--label-names', nargs='+', metavar='NAME', help='class names, one per class, in order')
    parser.add_argument('--dataset', dest='datasets', nargs='+', default=[], metavar='HUB_DATASET',
                        help='Hub dataset ids of the training data (model card); --result refers to the first')
    parser.add_argument('--result', dest='results', action='append', default=[], metavar='METRIC=VALUE',
                        type=_metric_value, help='an evaluation result for the card, e.g. top1=76.1 (repeatable)')
    parser.add_argument('--license', default='apache-2.0', help='license of the weights (card front matter)')
    where = parser.add_mutually_exclusive_group()
    where.add_argument('--out', metavar='DIR', help='write the folder to DIR and upload nothing')
    where.add_argument('--dry-run', action='store_true', help='build the folder, list it, upload nothing')
    parser.add_argument('--token', help='Hub token (default: HF_TOKEN or the `hf auth login` token)')
    parser.add_argument('--private', action='store_true', help='create the repository as private')
    parser.add_argument('--revision', help='branch to push to')
    parser.add_argument('--create-pr', action='store_true', help='open a pull request instead of committing')
    parser.add_argument('--commit-message', default='Add timm-dropres model')
    parser.set_defaults(handler=_push_command)


def _key_value(text: str) -> Tuple[str, Any]:
    key, sep, value = text.partition('=')
    if not sep or not key:
        raise argparse.ArgumentTypeError(f'expected KEY=VALUE, got {text!r}')
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a bare word such as guideline, as train.py's ParseKwargs keeps it


def _metric_value(text: str) -> Tuple[str, float]:
    key, sep, value = text.partition('=')
    try:
        if sep and key:
            return key, float(value)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f'expected METRIC=NUMBER (e.g. top1=76.1), got {text!r}')


def _push_command(args: argparse.Namespace) -> int:
    card = dict(label_names=args.label_names, license=args.license, datasets=args.datasets,
                results=dict(args.results))
    try:
        if args.results and not args.datasets:
            raise ValueError('--result needs --dataset (the dataset the results were measured on)')
        source = load_checkpoint(args.checkpoint, model_name=args.model_name, model_kwargs=dict(args.model_kwargs),
                                 args_path=args.args_path, use_ema=args.use_ema)
        if args.out:
            out = save_for_hub(source, args.out, args.repo_id, **card)
            print(f'wrote {out} ({", ".join(sorted(p.name for p in out.iterdir()))}); nothing uploaded')
        elif args.dry_run:
            with tempfile.TemporaryDirectory(prefix='timm-dropres-dry-run-') as tmp:
                _describe(save_for_hub(source, Path(tmp) / 'folder', args.repo_id, **card), args.repo_id)
        else:
            commit = push_to_hub(source, args.repo_id, token=args.token, private=args.private,
                                 revision=args.revision, create_pr=args.create_pr,
                                 commit_message=args.commit_message, **card)
            print(f'pushed to {getattr(commit, "commit_url", args.repo_id)}')
    except (HubError, ValueError, OSError) as e:
        print(f'timm-dropres push: error: {e}', file=sys.stderr)
        return 1
    return 0


def _describe(folder: Path, repo_id: str) -> None:
    print(f'dry run: would upload to {repo_id}:')
    for path in sorted(folder.iterdir()):
        print(f'  {path.name:20s} {path.stat().st_size:>12,d} bytes')
    config = json.loads((folder / 'config.json').read_text(encoding='utf-8'))
    print(json.dumps({k: config[k] for k in ('architecture', 'num_classes', 'model_args') if k in config}, indent=2))
