"""What the timm plugin autoload costs: at interpreter start-up, and when timm is imported.

Start-up: `timm_dropres-autoload.pth` imports `_timm_dropres_autoload` in every Python process of
the environment. `python -X importtime -c pass` reports that import's own and cumulative time
(equal when it imports nothing else) and every module imported at start-up, so the run also checks
that neither torch nor timm is among them. The median start-up wall time of `python -c pass` gives
the scale.

Import of timm: what the hook adds is `load_plugins()` (imports timm_dropres, registers its
variants), timed inside a process that imported timm with TIMM_DROPRES_AUTOLOAD=0; the median
wall time of `python -c "import timm"` with autoload off gives the scale.

Measures the environment of the interpreter that runs it, which must have the package installed.
The results file keeps one entry per kind of install ('wheel': `pip install .`, 'editable':
`pip install -e .`, whose hook module is read from the source tree): a run replaces its own entry.

    python benchmarks/import_time.py            # table on stdout, JSON in benchmarks/results/
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from _common import RESULTS_DIR, command_line, machine_info, markdown_table, write_json

HOOK_MODULE = '_timm_dropres_autoload'
SWITCH = 'TIMM_DROPRES_AUTOLOAD'


def run_python(code: str, *flags: str, env: Dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *flags, '-c', code], capture_output=True, text=True, env=env, check=True)


def startup_imports(env: Dict[str, str]) -> Dict[str, tuple]:
    """Module -> (self µs, cumulative µs) for one `python -X importtime -c pass`."""
    imports = {}
    for line in run_python('pass', '-X', 'importtime', env=env).stderr.splitlines():
        if line.startswith('import time:') and 'self [us]' not in line:
            self_us, cumulative_us, name = line[len('import time:'):].split('|')
            imports[name.strip()] = (int(self_us), int(cumulative_us))
    return imports


def describe_install(env: Dict[str, str]) -> Dict[str, object]:
    """Where the hook module comes from (site-packages: a wheel; else an editable install's source
    tree) and whether a cached .pyc of it exists (else Python compiles it in every process)."""
    code = (f'import importlib.util, json, os, sysconfig, {HOOK_MODULE} as m; '
            'print(json.dumps([m.__file__, sysconfig.get_paths()["purelib"], '
            'os.path.exists(importlib.util.cache_from_source(m.__file__))]))')
    file, purelib, bytecode = json.loads(run_python(code, env=env).stdout)
    kind = 'wheel' if Path(file).parent == Path(purelib) else 'editable'
    return {'kind': kind, 'file': file, 'cached_bytecode': bytecode}


def plugin_load(env_off: Dict[str, str]) -> tuple:
    """(ms spent in load_plugins() after `import timm` without autoload, variants it registered)."""
    code = (f'import json, os, time, timm, {HOOK_MODULE} as hook; os.environ.pop(hook.ENV_SWITCH); '
            'start = time.perf_counter(); hook.load_plugins(); ms = 1000 * (time.perf_counter() - start); '
            'print(json.dumps([ms, len(timm.list_models("*_dropres"))]))')
    ms, registered = json.loads(run_python(code, env=env_off).stdout)
    return ms, registered


def wall_ms(code: str, env: Dict[str, str]) -> float:
    start = time.perf_counter()
    run_python(code, env=env)
    return 1000 * (time.perf_counter() - start)


def summary(values: Sequence[float]) -> Dict[str, float]:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return {'median': round(median, 3), 'q1': round(q1, 3), 'q3': round(q3, 3), 'n': len(values)}


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--startup-runs', type=int, default=40, help='runs of `python -X importtime -c pass`')
    parser.add_argument('--timm-runs', type=int, default=8, help='processes that import timm, per measurement')
    parser.add_argument('--output', type=Path, default=RESULTS_DIR / 'import_time.json')
    args = parser.parse_args(argv)
    if min(args.startup_runs, args.timm_runs) < 2:
        parser.error('--startup-runs and --timm-runs must be at least 2 (quartiles need two values)')

    output = args.output.resolve()
    env = {k: v for k, v in os.environ.items() if k != SWITCH}
    off = {**env, SWITCH: '0'}
    with tempfile.TemporaryDirectory() as empty:
        # `python -c` puts the working directory first on sys.path: a source checkout there would
        # shadow the installed package and its metadata, so every run starts in an empty directory
        os.chdir(empty)
        entry = measure(args, env, off)
    results = json.loads(output.read_text()) if output.is_file() else {}
    results[entry['install']['kind']] = entry
    write_json(output, results)
    print_table(entry, output)


def measure(args: argparse.Namespace, env: Dict[str, str], off: Dict[str, str]) -> Dict[str, object]:
    """One results entry: start-up runs, then `import timm` runs with autoload on and off."""
    hook_self, hook_cumulative, startup, heavy = [], [], [], set()
    for _ in range(args.startup_runs):
        imports = startup_imports(env)
        if HOOK_MODULE not in imports:
            sys.exit(f'{HOOK_MODULE} is not imported at start-up: install the package first (pip install .)')
        hook_self.append(imports[HOOK_MODULE][0] / 1000)
        hook_cumulative.append(imports[HOOK_MODULE][1] / 1000)
        heavy |= {name for name in imports if name.split('.')[0] in ('torch', 'timm', 'timm_dropres')}
        startup.append(wall_ms('pass', env))

    import_timm, plugins, registered = [], [], set()
    for _ in range(args.timm_runs):
        import_timm.append(wall_ms('import timm', off))
        ms, count = plugin_load(off)
        plugins.append(ms)
        registered.add(count)

    return {
        'install': describe_install(env),
        'command': command_line(),
        'machine': machine_info(torch.device('cpu')),
        'python_executable': sys.executable,
        'startup': {
            'hook_import_self_ms': summary(hook_self),
            'hook_import_cumulative_ms': summary(hook_cumulative),
            'python_c_pass_wall_ms': summary(startup),
            'torch_timm_modules_imported_at_startup': sorted(heavy),
        },
        'import_timm': {
            'load_plugins_ms': summary(plugins),
            'import_timm_autoload_off_wall_ms': summary(import_timm),
            'variants_registered_by_load_plugins': sorted(registered),
        },
    }


def print_table(entry: Dict[str, object], output: Path) -> None:
    install = entry['install']
    rows = [
        [f'start-up: import of {HOOK_MODULE} (self / cumulative)', f"{entry['startup']['hook_import_self_ms']['median']:.3f} / "
         f"{entry['startup']['hook_import_cumulative_ms']['median']:.3f} ms"],
        ['start-up: `python -c pass` wall', f"{entry['startup']['python_c_pass_wall_ms']['median']:.1f} ms"],
        ['start-up: torch/timm modules imported', ', '.join(entry['startup']['torch_timm_modules_imported_at_startup']) or 'none'],
        ['`import timm`: load_plugins() (timm_dropres import + registration)',
         f"{entry['import_timm']['load_plugins_ms']['median']:.0f} ms"],
        ['`import timm` wall with TIMM_DROPRES_AUTOLOAD=0, for scale',
         f"{entry['import_timm']['import_timm_autoload_off_wall_ms']['median']:.0f} ms"],
    ]
    print(f"{install['kind']} install, hook module {install['file']} (cached bytecode: {install['cached_bytecode']})")
    print(markdown_table(['what (medians)', 'time'], rows))
    print(f"\nvariants registered by load_plugins(): {entry['import_timm']['variants_registered_by_load_plugins']}; "
          f"results in {output}")


if __name__ == '__main__':
    main()
