"""amlocal: Azure Machine Learning (SDK v1) training runs, emulated locally in Docker.

The import root for the command line (`amlocal.cli`), the run backends (`amlocal.backends`) and
the image recipes (`amlocal.recipes`, the top-level docker/ folder).

azureml-core's names are here too (`from amlocal import Workspace, Experiment, ScriptRunConfig,
ComputeTarget, AmlCompute, Model, ...`), imported on first use so that `import amlocal` stays
cheap; `amlocal.core`, `amlocal.train.dnn` and `amlocal.exceptions` mirror azureml's modules, so
SDK v1 code runs with `azureml` changed to `amlocal` in its import lines.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Workspace": "amlocal.workspace",
    "ComputeTarget": "amlocal.compute",
    "AmlCompute": "amlocal.compute",
    "ComputeTargetException": "amlocal.compute",
    "Model": "amlocal.model",
    "Experiment": "amlocal.experiment",
    "Run": "amlocal.run",
    "Environment": "amlocal.environment",
    "ScriptRunConfig": "amlocal.script_run_config",
    "RunConfiguration": "amlocal.script_run_config",
    "Datastore": "amlocal.datastore",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'amlocal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
