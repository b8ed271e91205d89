"""Build glue for the timm plugin autoload: ships `timm_dropres-autoload.pth` into site-packages.

Everything else is declared in pyproject.toml. A `.pth` file only works at the top level of
site-packages, which no declarative setuptools setting can place, so a build sub-command writes it:
into build_lib for a wheel (whose root is installed into site-packages), and, for
`pip install -e`, into the root of the editable wheel (setuptools serves the packages from the
source tree then and ignores build_lib; its install command's `install_lib` is that root).
"""
from pathlib import Path

from setuptools import Command, setup
from setuptools.command.build import build

AUTOLOAD_PTH = 'timm_dropres-autoload.pth'
AUTOLOAD_LINE = 'import _timm_dropres_autoload; _timm_dropres_autoload.install()\n'


class build_autoload_pth(Command):
    """Write the one-line .pth file that starts `_timm_dropres_autoload` at interpreter start-up."""

    description = f'write {AUTOLOAD_PTH}'
    user_options = []

    def initialize_options(self) -> None:
        self.build_lib = None
        self.editable_mode = False  # set by setuptools' editable_wheel

    def finalize_options(self) -> None:
        self.set_undefined_options('build_py', ('build_lib', 'build_lib'))

    def run(self) -> None:
        root = self.get_finalized_command('install').install_lib if self.editable_mode else self.build_lib
        target = Path(root, AUTOLOAD_PTH)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(AUTOLOAD_LINE, encoding='utf-8')

    def get_outputs(self) -> list:
        return [] if self.editable_mode else [str(Path(self.build_lib, AUTOLOAD_PTH))]

    def get_output_mapping(self) -> dict:
        return {}

    def get_source_files(self) -> list:
        return []


class build_with_autoload(build):
    sub_commands = [*build.sub_commands, ('build_autoload_pth', None)]


setup(cmdclass={'build': build_with_autoload, 'build_autoload_pth': build_autoload_pth})
