"""The `timm-dropres` command: one subcommand per module, each adding its own parser.

A command module defines `add_command(subparsers)`, which registers its parser and sets
`handler=` to a function taking the parsed args and returning an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

COMMAND_MODULES: List[str] = ['hub', 'shift', 'show']
"""Modules of timm_dropres that contribute a subcommand, in help order."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='timm-dropres', description='The dropout rule of Kim et al. (UAI 2023) for timm models.')
    subparsers = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for name in COMMAND_MODULES:
        importlib.import_module(f'timm_dropres.{name}').add_command(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == '__main__':
    sys.exit(main())
