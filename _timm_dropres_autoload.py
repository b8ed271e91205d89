"""Load timm plugins when, and only when, `timm` is imported.

timm has no plugin discovery, so `timm.create_model('resnet50_dropres')`, timm's train.py /
validate.py / inference.py and `hf-hub:` configs naming a plugin architecture all fail unless
something imported the plugin first. This module closes that gap with Python's standard start-up
hook: `timm_dropres-autoload.pth` in site-packages runs `install()` at interpreter start-up, which
puts a one-shot finder on `sys.meta_path`. When `timm` itself is imported, the finder wraps the
loader of the top-level `timm` module; right after timm's own `__init__` has run, every entry
point of the group `timm.plugins` is loaded (a callable is then called with no arguments), and
the finder removes itself.

It is a top-level module, not part of `timm_dropres`, because importing the package imports torch
and timm; this module imports nothing that Python has not already imported at start-up (`sys`,
`os`), so a process that never imports timm pays for one small module and nothing else.

- A plugin that fails gives one RuntimeWarning naming it, and `import timm` still succeeds.
- `TIMM_DROPRES_AUTOLOAD=0` (or false/no/off) turns autoload off; checked at start-up and again
  when timm is imported.
- A plugin whose package is being imported right now is skipped: that import is what pulled timm
  in (e.g. an explicit `import timm_dropres`), and it registers its models itself when it finishes.
"""
import os
import sys

ENTRY_POINT_GROUP = 'timm.plugins'
ENV_SWITCH = 'TIMM_DROPRES_AUTOLOAD'
_OFF = ('0', 'false', 'no', 'off')


def enabled() -> bool:
    """Whether autoload is on: `TIMM_DROPRES_AUTOLOAD` unset or not one of 0/false/no/off."""
    return os.environ.get(ENV_SWITCH, '').strip().lower() not in _OFF


def install() -> None:
    """Put the finder on `sys.meta_path` unless autoload is off; idempotent (run by the .pth file)."""
    if enabled() and not any(isinstance(finder, TimmImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, TimmImportHook())


def load_plugins() -> None:
    """Load every `timm.plugins` entry point; a failure warns once per plugin and never raises."""
    if not enabled():
        return
    import warnings
    from importlib.metadata import entry_points
    try:
        plugins = list(entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:  # broken metadata of some installed distribution
        warnings.warn(f'timm plugins not loaded: reading entry points failed ({type(exc).__name__}: {exc})',
                      RuntimeWarning, stacklevel=2)
        return
    for plugin in plugins:
        if _being_imported(plugin.module):
            continue
        try:
            loaded = plugin.load()
            if callable(loaded):
                loaded()
        except Exception as exc:
            warnings.warn(
                f'timm plugin {plugin.name!r} ({plugin.value}) failed and was skipped: '
                f'{type(exc).__name__}: {exc}. Set {ENV_SWITCH}=0 to turn plugin autoload off.',
                RuntimeWarning, stacklevel=2)


def _being_imported(module: str) -> bool:
    """True while `module` or a package above it is still executing its own import."""
    parts = module.split('.')
    for end in range(1, len(parts) + 1):
        spec = getattr(sys.modules.get('.'.join(parts[:end])), '__spec__', None)
        # importlib marks a module's spec `_initializing` until its code has finished running
        if getattr(spec, '_initializing', False):
            return True
    return False


class TimmImportHook:
    """`sys.meta_path` finder: hands out timm's own spec with a loader that loads plugins after it."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != 'timm':
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, 'find_spec', None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                if hasattr(spec.loader, 'exec_module'):
                    spec.loader = _PluginsAfterExec(spec.loader, self)
                return spec
        return None


class _PluginsAfterExec:
    """Wraps timm's loader: runs timm's module code, restores the loader, then loads the plugins."""

    def __init__(self, loader, hook: TimmImportHook) -> None:
        self.loader = loader
        self.hook = hook

    def __getattr__(self, name):
        # anything timm's import asks of its loader (get_resource_reader, is_package, ...)
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)  # an exception here leaves the hook in place for a retry
        module.__loader__ = module.__spec__.loader = self.loader
        if self.hook in sys.meta_path:
            sys.meta_path.remove(self.hook)
        load_plugins()
