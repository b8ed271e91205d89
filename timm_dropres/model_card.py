"""The Hub model card (README.md) of a pushed `*_dropres` model.

Someone who finds the repository on the Hub must see what the model is, where its dropout sits,
how it was trained and how to load it. The front matter is built with huggingface_hub's
ModelCardData, so the Hub reads library, license, tags, datasets, metrics and results from it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch.nn as nn
from huggingface_hub import EvalResult, ModelCardData
from timm.models import resolve_pretrained_cfg, split_model_name_tag

from . import insertion
from .placement import BLOCK_SLOTS
from .settings import DropResSettings

TAGS = ('image-classification', 'timm', 'dropres')

BRANCH_POSITION_TEXT = {
    'guideline': "after the branch's last batch norm (+ activation) and before its last conv: the paper's rule",
    'branch_end': 'at the end of the residual branch, right before the addition',
    'after_add': 'after the addition (and its activation)',
    'before_norm': "between the branch's last conv and its batch norm",
}
HEAD_POSITION_TEXT = {
    'pre_pool': "element-wise on the final feature map, before global pooling (the paper's rule; "
                "timm's own post-pool dropout is off)",
    'post_pool': "on the pooled features (timm's usual place)",
}

RESULT_METRICS = {'top1': ('accuracy', 'Top-1 accuracy'), 'top5': ('accuracy', 'Top-5 accuracy')}
"""timm's metric names -> (Hub metric type, display name); other names are used as they are."""

TRAINING_ARGS = (
    'model', 'pretrained', 'initial_checkpoint', 'dataset', 'train_split', 'val_split', 'num_classes',
    'img_size', 'input_size', 'epochs', 'batch_size', 'grad_accum_steps', 'opt', 'lr', 'momentum',
    'weight_decay', 'sched', 'warmup_epochs', 'drop', 'drop_path', 'drop_block', 'model_kwargs',
    'smoothing', 'mixup', 'cutmix', 'aa', 'reprob', 'model_ema', 'model_ema_decay', 'amp', 'seed',
)
"""train.py arguments shown on the card (those the run set to something other than None or '')."""

CITATION = """@InProceedings{pmlr-v216-kim23a,
  title = {How to use dropout correctly on residual networks with batch normalization},
  author = {Kim, Bum Jun and Choi, Hyeyeon and Jang, Hyeonah and Lee, Donggeon and Kim, Sang Woo},
  booktitle = {Proceedings of the Thirty-Ninth Conference on Uncertainty in Artificial Intelligence},
  pages = {1058--1067},
  year = {2023},
  volume = {216},
  series = {Proceedings of Machine Learning Research},
  publisher = {PMLR}
}"""


@dataclass(frozen=True)
class TrainingRecord:
    """What a train.py checkpoint tells about the run that produced the weights."""

    checkpoint: str  # file name of the checkpoint
    args: Dict[str, Any] = field(default_factory=dict)  # the run's train.py arguments ({} if unknown)
    epoch: Optional[int] = None
    metric: Optional[float] = None  # the checkpoint's eval metric (args['eval_metric'], top1 by default)
    ema: bool = False  # the weights are the checkpoint's EMA weights


def base_model_id(train_args: Mapping[str, Any]) -> Optional[str]:
    """The Hub repo of the weights a run fine-tuned from (train.py --pretrained), if it names one."""
    if not train_args.get('pretrained') or train_args.get('pretrained_path') or not train_args.get('model'):
        return None
    name, tag = split_model_name_tag(train_args['model'])
    try:
        return resolve_pretrained_cfg(name, pretrained_cfg=tag or None).hf_hub_id
    except RuntimeError:  # not a registered model here: the card says nothing rather than guess
        return None


def model_card(
        model: nn.Module,
        repo_id: str,
        architecture: str,
        license: str = 'apache-2.0',
        datasets: Sequence[str] = (),
        results: Optional[Mapping[str, float]] = None,
        training: Optional[TrainingRecord] = None,
) -> str:
    """The README.md text for `model` pushed to `repo_id` as `architecture` (a `*_dropres` name).

    `results` ({metric: value}, e.g. {'top1': 76.1}) are measured on `datasets[0]`.
    """
    settings: DropResSettings = model.dropres_settings
    results = dict(results or {})
    if results and not datasets:
        raise ValueError('results need the dataset they were measured on: pass datasets')
    metric_types = [RESULT_METRICS.get(k, (k, k))[0] for k in results]
    data = ModelCardData(
        library_name='timm',
        license=license,
        tags=list(TAGS),
        pipeline_tag='image-classification',
        datasets=list(datasets) or None,
        metrics=list(dict.fromkeys(metric_types)) or None,
        base_model=base_model_id(training.args) if training else None,
        model_name=repo_id,
        eval_results=[
            EvalResult(
                task_type='image-classification', dataset_type=datasets[0], dataset_name=datasets[0],
                metric_type=RESULT_METRICS.get(k, (k, k))[0], metric_name=RESULT_METRICS.get(k, (k, k))[1],
                metric_value=v)
            for k, v in results.items()
        ] or None,
    )
    base = architecture[:-len('_dropres')] if architecture.endswith('_dropres') else architecture
    sections = [
        f'# Model card for {repo_id.split("/")[-1]}',
        f'A `{architecture}` image classifier ({model.num_classes} classes): timm\'s `{base}` with the '
        f'dropout rule of Kim et al., "How to Use Dropout Correctly on Residual Networks with Batch '
        f'Normalization" (UAI 2023, arXiv 2302.06112), built by '
        f'[timm-dropres](https://pypi.org/project/timm-dropres/). It has exactly the parameters of `{base}`; '
        f'the dropout acts only in training.',
        _dropout_section(model, settings),
        _training_section(training),
    ]
    if results:
        sections.append(_results_section(datasets[0], results))
    sections += [_usage_section(repo_id), '## Citation\n\n```bibtex\n' + CITATION + '\n```']
    return f'---\n{data.to_yaml()}\n---\n\n' + '\n\n'.join(sections) + '\n'


def _dropout_section(model: nn.Module, settings: DropResSettings) -> str:
    lines = ['## Where the dropout sits', '']
    blocks = _blocks_by_class(model)
    if settings.branch_drop_rate > 0 and blocks:
        lines += [
            f'Residual branch: one `nn.Dropout(p={settings.branch_drop_rate:g})` per block, '
            f'`branch_drop_pos=\'{settings.branch_drop_pos}\'`: '
            f'{BRANCH_POSITION_TEXT[settings.branch_drop_pos]}.',
            '',
            '| Block type | Blocks | Dropout on the output of | Example |',
            '|---|---|---|---|',
        ]
        for cls, (count, first) in blocks.items():
            path = BLOCK_SLOTS[cls].path(settings.branch_drop_pos)
            example = '.'.join(p for p in (first, path) if p)
            lines.append(f'| `{cls.__name__}` | {count} | `{path or "the block"}` | `{example}` |')
    else:
        lines.append('Residual branch: no dropout (`branch_drop_rate=0`).')
    lines.append('')
    if settings.drop_rate > 0:
        lines.append(f'Head: `p={settings.drop_rate:g}`, `head_drop_pos=\'{settings.head_drop_pos}\'`: '
                     f'{HEAD_POSITION_TEXT[settings.head_drop_pos]}.')
    else:
        lines.append('Head: no dropout (`drop_rate=0`).')
    kwargs = ', '.join(f'{k}={v!r}' for k, v in settings.as_kwargs().items())
    lines += ['', f'`config.json` rebuilds these settings: its `model_args` hold `{kwargs}`.']
    return '\n'.join(lines)


def _blocks_by_class(model: nn.Module) -> Dict[type, Tuple[int, str]]:
    """block class -> (number of blocks, name of the first one), in model order.

    A block whose own output is dropped has been given a generated subclass (insertion.py);
    its slots are those of the timm class it derives from.
    """
    counts: Counter = Counter()
    first: Dict[type, str] = {}
    for name, module in model.named_modules():
        cls = type(module)
        if cls.__module__ == insertion.__name__:
            cls = cls.__mro__[1]
        if cls in BLOCK_SLOTS:
            counts[cls] += 1
            first.setdefault(cls, name)
    return {cls: (counts[cls], first[cls]) for cls in first}


def _training_section(training: Optional[TrainingRecord]) -> str:
    if training is None:
        return '## Training\n\nThe training run of these weights was not recorded with them.'
    lines = ['## Training', '']
    source = f'Weights: the {"EMA weights" if training.ema else "weights"} of `{training.checkpoint}`'
    if training.epoch is not None:
        source += f' (epoch {training.epoch}'
        if training.metric is not None:
            source += f', {training.args.get("eval_metric", "top1")} {training.metric:g} on the run\'s validation split'
        source += ')'
    lines.append(source + '.')
    shown = [(k, training.args[k]) for k in TRAINING_ARGS if training.args.get(k) not in (None, '')]
    if shown:
        lines += ['', "timm `train.py` arguments of the run (`--drop` is timm-dropres' head `drop_rate`):", '',
                  '| Argument | Value |', '|---|---|']
        lines += [f'| `{k}` | `{_cell(v)}` |' for k, v in shown]
    else:
        lines += ['', 'The training arguments were not recorded with the checkpoint.']
    return '\n'.join(lines)


def _results_section(dataset: str, results: Mapping[str, float]) -> str:
    lines = ['## Results', '', '| Dataset | Metric | Value |', '|---|---|---|']
    lines += [f'| {dataset} | {RESULT_METRICS.get(k, (k, k))[1]} | {v:g} |' for k, v in results.items()]
    return '\n'.join(lines)


def _usage_section(repo_id: str) -> str:
    return f"""## How to use

```bash
pip install timm-dropres
```

```python
import timm
import timm_dropres  # registers the *_dropres architectures (its timm plugin does this when autoload is on)

model = timm.create_model('hf-hub:{repo_id}', pretrained=True).eval()
data_config = timm.data.resolve_model_data_config(model)
transform = timm.data.create_transform(**data_config, is_training=False)
print(model.dropres_settings)  # the dropout settings above
```"""


def _cell(value: Any) -> str:
    return str(value).replace('|', '\\|')
