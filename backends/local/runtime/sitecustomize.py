"""Run-side bootstrap, on PYTHONPATH of every amlocal run (container or subprocess).

Makes `from azureml.core.run import Run; Run.get_context()` return the local run, whether or not
azureml-core is installed where the script runs:
- with azureml-core, nothing is changed: its own `Run.get_context()` is the SDK's live run
  (`_SubmittedRun`), talking to the emulator endpoint the run's driver serves (the AZUREML_*
  variables amlocal sets, see backends/local/run_endpoint.py). As Azure ML's job wrapper does,
  what the SDK has not sent yet is flushed when the script ends (azureml-core itself flushes only
  on complete(), fail() or a kill signal, not at interpreter exit). A run without an endpoint
  (AMLOCAL_IN_RUN_SDK=0) has only `Run.get_context` redirected to the stand-in, because
  azureml-core would otherwise fall back to an offline run that drops every metric;
- without azureml-core, the stdlib-only stand-in package under shim/ provides `azureml.core.run`
  (runtime/amlocal_run.py), which writes to the run's telemetry file.
Where azureml.opendatasets is not installed, opendatasets/ provides its MNIST from amlocal's
dataset cache (mounted into runs that use it).
Any other sitecustomize on the path still runs: this file would otherwise hide it.
"""
import atexit
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.realpath(__file__))


def _is_here(path):
    return os.path.realpath(path or ".") == _HERE


def _installed(*package):
    paths = [p for p in sys.path if not _is_here(p)]
    for path in paths:
        if os.path.isfile(os.path.join(path, "azureml", *package, "__init__.py")):
            return True
    return False


def _azureml_core_installed():
    return _installed("core")


_RUN_MODULE = "azureml.core.run"


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


def _flush_the_sdks_runs():
    """Send what azureml-core's run objects of this process still hold (metrics, mostly)."""
    run_module = sys.modules.get(_RUN_MODULE)
    submitted = getattr(run_module, "_SubmittedRun", None)
    for run in list(getattr(submitted, "_SubmittedRun__instances", {}).values()):
        try:
            run.flush()
        except Exception as error:  # the script has ended: say it, do not hide its exit code
            sys.stderr.write("amlocal: could not flush run %s at exit: %s\n" % (run.id, error))


def _chain_next_sitecustomize():
    others = [p for p in sys.path if not _is_here(p)]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


def _flush_at_exit():
    """Run the flush when the main thread ends, before concurrent.futures stops taking work
    (the SDK sends through a thread pool): its exit hook is registered first, and these hooks
    run last registered first."""
    import concurrent.futures.thread  # noqa: F401  (registers its exit hook now)
    import threading

    register = getattr(threading, "_register_atexit", None)  # Python 3.9+
    (register or atexit.register)(_flush_the_sdks_runs)


if not _installed("opendatasets"):
    sys.path.append(os.path.join(_HERE, "opendatasets"))
if not _azureml_core_installed():
    sys.path.append(os.path.join(_HERE, "shim"))
elif os.environ.get("AZUREML_SERVICE_ENDPOINT"):
    _flush_at_exit()
else:
    sys.meta_path.insert(0, _RedirectGetContext())
_chain_next_sitecustomize()
