"""What both benchmarks record beside their numbers: the machine, the command, and the results file.

A number without the machine and the exact command that produced it cannot be checked, so every
results JSON carries them. Results are written through a temporary file and renamed, so an
interrupted run never leaves a truncated JSON behind.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Sequence

import timm
import torch

import timm_dropres

RESULTS_DIR = Path(__file__).resolve().parent / 'results'


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> Dict[str, Any]:
    """The facts a reader needs to compare a result with their own: CPU, accelerator, versions, load."""
    info = {
        'nproc': os.cpu_count(),
        'cpu_model': cpu_model(),
        'torch_threads': torch.get_num_threads(),
        'platform': platform.platform(),
        'python': platform.python_version(),
        'torch': torch.__version__,
        'timm': timm.__version__,
        'timm_dropres': timm_dropres.__version__,
        'device': str(device),
    }
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
        info['cuda'] = torch.version.cuda
    if hasattr(os, 'getloadavg'):
        info['loadavg_at_start'] = os.getloadavg()
    return info


def command_line() -> str:
    """The command as typed, relative to the current directory, for the results file."""
    return shlex.join([Path(sys.executable).name, *sys.argv])


def write_results(path: Path, args: argparse.Namespace, machine: Dict[str, Any], **results: Any) -> None:
    """Write the command, the machine (with the load average at the end), the config and `results`."""
    if hasattr(os, 'getloadavg'):
        machine = {**machine, 'loadavg_at_end': os.getloadavg()}
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    write_json(path, {'command': command_line(), 'machine': machine, 'config': config, **results})


def write_json(path: Path, data: Dict[str, Any]) -> None:
    """Write `data` to `path` atomically (temporary file beside it, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(data, f, indent=2)
            f.write('\n')
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)
