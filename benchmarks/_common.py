"""What both benchmarks record beside their numbers: the machine, the command, and the results file.

A number without the machine and the exact command that produced it cannot be checked, so every
results JSON carries them. Results are written through a temporary file and renamed, so an
interrupted run never leaves a truncated JSON behind.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, Sequence

from timm_dropres.records import machine_info, write_json  # noqa: F401  (re-exported for the scripts)

RESULTS_DIR = Path(__file__).resolve().parent / 'results'


def command_line() -> str:
    """The command as typed, relative to the current directory, for the results file."""
    return shlex.join([Path(sys.executable).name, *sys.argv])


def write_results(path: Path, args: argparse.Namespace, machine: Dict[str, Any], **results: Any) -> None:
    """Write the command, the machine (with the load average at the end), the config and `results`."""
    if hasattr(os, 'getloadavg'):
        machine = {**machine, 'loadavg_at_end': os.getloadavg()}
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    write_json(path, {'command': command_line(), 'machine': machine, 'config': config, **results})


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)
