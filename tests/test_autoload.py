"""The timm plugin autoload, checked the way users get it.

The package is built as a wheel (and as an editable wheel) with setuptools' PEP 517 hooks,
installed into a fresh virtualenv, and driven by subprocesses that import nothing but timm. torch
and timm come from this interpreter's site-packages, linked into one folder that is a plain path
entry of the fresh venv (nothing downloads; `--system-site-packages` would give the base
interpreter's site-packages, not this environment's). That folder leaves out this environment's own
copy of the package and every .pth file: what autoloads is the freshly installed copy, and each
test checks that it is.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import _timm_dropres_autoload as autoload

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ('pyproject.toml', 'setup.py', 'README.md', '_timm_dropres_autoload.py', 'timm_dropres')
"""What setuptools reads to build the wheel (copied, so building writes nothing into the repo)."""

OWN_FILES = ('timm_dropres', '_timm_dropres_autoload', '__editable__')
"""Names of this package's files in site-packages (package, hook, metadata, editable finder)."""
UNKNOWN_MODEL = 'RuntimeError: Unknown model (resnet50_dropres)'  # timm's own error


class Venv:
    """A fresh virtualenv with the package installed, and a way to run Python in it."""

    def __init__(self, root: Path, source: Path) -> None:
        self.root = root
        self.source = source  # where the installed timm_dropres must come from
        self.python = root / 'bin' / 'python'

    def run(self, code: str, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        full_env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', autoload.ENV_SWITCH)}
        full_env.update(env or {})
        result = subprocess.run(
            [str(self.python), *args, '-c', textwrap.dedent(code)],
            capture_output=True, text=True, env=full_env, cwd=self.root, timeout=300)
        if check:
            assert result.returncode == 0, result.stderr[-3000:]
        return result

    def run_json(self, code: str, **kwargs) -> dict:
        return json.loads(self.run(code, **kwargs).stdout.strip().splitlines()[-1])


def _build(kind: str, tmp: Path) -> tuple[Path, Path]:
    """Build `kind` ('wheel' or 'editable') from a copy of the sources; return (wheel, source copy)."""
    src, dist = tmp / 'src', tmp / 'dist'
    src.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns('__pycache__'))
        else:
            shutil.copy2(REPO / name, src / name)
    hook = 'build_wheel' if kind == 'wheel' else 'build_editable'
    build = subprocess.run(
        [sys.executable, '-c', f'import sys; from setuptools import build_meta; build_meta.{hook}(sys.argv[1])', str(dist)],
        cwd=src, capture_output=True, text=True, timeout=300)
    if build.returncode:
        pytest.fail(f'setuptools could not build the {kind} (the test builds without network, with this '
                    f'environment\'s setuptools: it needs setuptools>=70.1, or the wheel package):\n{build.stderr[-3000:]}')
    return next(dist.glob('*.whl')), src


def _make_venv(root: Path) -> None:
    try:
        subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(root)],
                       check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f'cannot create a virtualenv with {sys.executable} -m venv: {exc}')


def _dependency_dir(tmp: Path) -> Path:
    """A folder of links to the entries of the site-packages that hold torch and timm (and the rest of
    the dependencies), minus any installed copy of this package, which would shadow the one under test."""
    deps = tmp / 'dependencies'
    deps.mkdir()
    holders = [Path(importlib.util.find_spec(name).origin).parents[1] for name in ('torch', 'timm')]
    for site_dir in dict.fromkeys([*holders, *map(Path, site.getsitepackages())]):
        for entry in sorted(site_dir.iterdir()) if site_dir.is_dir() else ():
            if not (entry.name.startswith(OWN_FILES) or entry.suffix == '.pth' or (deps / entry.name).exists()):
                (deps / entry.name).symlink_to(entry)
    return deps


def _install(kind: str, tmp: Path) -> Venv:
    wheel, src = _build(kind, tmp)
    env = Venv(tmp / 'venv', source=tmp / 'venv' if kind == 'wheel' else src)
    _make_venv(env.root)
    subprocess.run([sys.executable, '-m', 'pip', '--python', str(env.python), 'install', '--no-deps', '--no-index',
                    '--no-compile', '--disable-pip-version-check', '-q', str(wheel)],
                   check=True, capture_output=True, timeout=300)
    purelib = env.run('import sysconfig; print(sysconfig.get_paths()["purelib"])').stdout.strip()
    Path(purelib, '_test_dependencies.pth').write_text(f'{_dependency_dir(tmp)}\n')
    return env


@pytest.fixture(scope='module')
def wheel_venv(tmp_path_factory) -> Venv:
    return _install('wheel', tmp_path_factory.mktemp('wheel'))


@pytest.fixture(scope='module')
def editable_venv(tmp_path_factory) -> Venv:
    return _install('editable', tmp_path_factory.mktemp('editable'))


@pytest.fixture(params=['wheel_venv', 'editable_venv'])
def venv(request) -> Venv:
    """Both installs: what differs between them is only how the package and its .pth get there."""
    return request.getfixturevalue(request.param)


def _is_within(path: str, root: Path) -> bool:
    return Path(path).resolve().is_relative_to(root.resolve())


def test_import_timm_alone_gives_the_variants(venv):
    out = venv.run_json('''
        import json, sys, timm
        model = timm.create_model('resnet50_dropres')
        print(json.dumps({
            'class': type(model).__name__,
            'settings': model.dropres_settings.as_kwargs(),
            'package': sys.modules['timm_dropres'].__file__,
            'timm_loader': type(timm.__spec__.loader).__name__,
            'hooks_left': [type(f).__name__ for f in sys.meta_path if type(f).__name__ == 'TimmImportHook'],
        }))
    ''')
    assert out['class'] == 'ResNetDropRes'
    assert out['settings'] == {'branch_drop_rate': 0.1, 'drop_rate': 0.2,
                               'branch_drop_pos': 'guideline', 'head_drop_pos': 'pre_pool'}
    assert _is_within(out['package'], venv.source), 'autoload must use the freshly installed copy'
    assert out['timm_loader'] == 'SourceFileLoader', 'timm keeps its own loader'
    assert out['hooks_left'] == [], 'the finder removes itself once timm is imported'


def test_startup_imports_neither_torch_nor_timm(venv):
    importtime = venv.run('pass', '-X', 'importtime').stderr
    imported = {line.rsplit('|', 1)[-1].strip() for line in importtime.splitlines() if line.startswith('import time:')}
    assert autoload.__name__ in imported, 'the .pth start-up hook did not run'
    assert not {name for name in imported if name.split('.')[0] in ('torch', 'timm', 'timm_dropres')}


def test_switch_turns_autoload_off(wheel_venv):
    result = wheel_venv.run("import timm; timm.create_model('resnet50_dropres')",
                            env={autoload.ENV_SWITCH: '0'}, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == UNKNOWN_MODEL


def test_explicit_import_is_idempotent(wheel_venv):
    out = wheel_venv.run_json('''
        import json, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            import timm_dropres  # imports timm while the package itself is still importing
            import timm
            before = timm.list_models('*_dropres')
            again = timm_dropres.register_variants()
        print(json.dumps({'before': len(before), 'again': set(again) == set(before),
                          'warnings': [str(w.message) for w in caught
                                       if 'Overwriting' in str(w.message) or 'timm plugin' in str(w.message)]}))
    ''')
    assert out == {'before': out['before'], 'again': True, 'warnings': []}
    assert out['before'] > 50


def test_failing_plugin_warns_once_and_timm_still_imports(wheel_venv, tmp_path):
    dist_info = tmp_path / 'broken_timm_plugin-1.0.dist-info'
    dist_info.mkdir()
    (dist_info / 'METADATA').write_text('Metadata-Version: 2.1\nName: broken-timm-plugin\nVersion: 1.0\n')
    (dist_info / 'entry_points.txt').write_text(
        '[timm.plugins]\nraises = broken_timm_plugin:register\nmissing = no_such_module_for_timm:register\n')
    (tmp_path / 'broken_timm_plugin.py').write_text('def register():\n    raise ValueError("plugin bug")\n')
    out = wheel_venv.run_json('''
        import json, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            import timm
        model = timm.create_model('resnet10t_dropres')
        print(json.dumps({'class': type(model).__name__,
                          'warnings': sorted(str(w.message) for w in caught if 'timm plugin' in str(w.message))}))
    ''', env={'PYTHONPATH': str(tmp_path)})
    assert out['class'] == 'ResNetDropRes', 'the working plugin still loads'
    missing, raises = out['warnings']
    assert missing.startswith("timm plugin 'missing' (no_such_module_for_timm:register) failed and was skipped: "
                              "ModuleNotFoundError")
    assert raises.startswith("timm plugin 'raises' (broken_timm_plugin:register) failed and was skipped: "
                             "ValueError: plugin bug")


@pytest.mark.parametrize('value, expected', [
    (None, True), ('1', True), ('', True), ('yes', True),
    ('0', False), ('false', False), ('No', False), (' off ', False),
])
def test_switch_values(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(autoload.ENV_SWITCH, raising=False)
    else:
        monkeypatch.setenv(autoload.ENV_SWITCH, value)
    assert autoload.enabled() is expected


def test_install_is_idempotent_and_honours_the_switch(monkeypatch):
    monkeypatch.setattr(sys, 'meta_path', [f for f in sys.meta_path if not isinstance(f, autoload.TimmImportHook)])
    monkeypatch.delenv(autoload.ENV_SWITCH, raising=False)
    autoload.install()
    autoload.install()
    assert sum(isinstance(f, autoload.TimmImportHook) for f in sys.meta_path) == 1
    assert isinstance(sys.meta_path[0], autoload.TimmImportHook), 'must see `timm` before the path finders'

    monkeypatch.setattr(sys, 'meta_path', [f for f in sys.meta_path if not isinstance(f, autoload.TimmImportHook)])
    monkeypatch.setenv(autoload.ENV_SWITCH, '0')
    autoload.install()
    assert not any(isinstance(f, autoload.TimmImportHook) for f in sys.meta_path)
