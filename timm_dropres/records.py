"""What every result file records beside its numbers, and how it is written.

A number without the machine that produced it cannot be checked, so the benchmarks and the
`shift` diagnostic store `machine_info()` with each result. Files are written through a temporary
file beside the target and renamed, so an interrupted run never leaves a truncated result behind.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import timm
import torch


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: Optional[torch.device] = None) -> Dict[str, Any]:
    """CPU, accelerator, versions and the load average (whether other work shared the CPUs)."""
    from . import __version__
    device = device or torch.device('cpu')
    info: Dict[str, Any] = {
        'nproc': os.cpu_count(),
        'cpu_model': cpu_model(),
        'torch_threads': torch.get_num_threads(),
        'platform': platform.platform(),
        'python': platform.python_version(),
        'torch': torch.__version__,
        'timm': timm.__version__,
        'timm_dropres': __version__,
        'device': str(device),
    }
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
        info['cuda'] = torch.version.cuda
    if hasattr(os, 'getloadavg'):
        info['loadavg_at_start'] = os.getloadavg()
    return info


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write` on a temporary path beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Dict[str, Any]) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + '\n'))
