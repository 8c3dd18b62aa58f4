"""Run-side bootstrap, on PYTHONPATH of every amlocal run (container or subprocess).

Makes `from azureml.core.run import Run; Run.get_context()` return the local run, whether or not
azureml-core is installed where the script runs:
- without azureml-core, the stdlib-only stand-in package under shim/ provides `azureml.core.run`;
- with azureml-core, its own package is used and only `Run.get_context` is redirected, because
  real azureml-core would otherwise look for an Azure service and fall back to an offline run
  that drops every metric.
Any other sitecustomize on the path still runs: this file would otherwise hide it.
"""
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.realpath(__file__))


def _is_here(path):
    return os.path.realpath(path or ".") == _HERE
_RUN_MODULE = "azureml.core.run"


def _azureml_core_installed():
    paths = [p for p in sys.path if not _is_here(p)]
    for path in paths:
        if os.path.isfile(os.path.join(path, "azureml", "core", "__init__.py")):
            return True
    return False


class _RedirectGetContext(importlib.abc.MetaPathFinder):
    """Patches azureml-core's Run.get_context right after azureml.core.run is executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _RUN_MODULE:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        original_exec = spec.loader.exec_module

        def exec_and_patch(module):
            original_exec(module)
            import amlocal_run
            module.Run.get_context = classmethod(amlocal_run.get_context_for_azureml_core)

        spec.loader.exec_module = exec_and_patch
        return spec


def _chain_next_sitecustomize():
    others = [p for p in sys.path if not _is_here(p)]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


if _azureml_core_installed():
    sys.meta_path.insert(0, _RedirectGetContext())
else:
    sys.path.append(os.path.join(_HERE, "shim"))
_chain_next_sitecustomize()
