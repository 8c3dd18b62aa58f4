"""amlocal: Azure Machine Learning (SDK v1) training runs, emulated locally in Docker.

The import root for the command line (`amlocal.cli`), the run backends (`amlocal.backends`) and
the image recipes (`amlocal.recipes`, the top-level docker/ folder).

azureml-core's names are here too (`from amlocal import Workspace, ComputeTarget, AmlCompute,
ComputeTargetException`), imported on first use so that `import amlocal` stays cheap.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Workspace": "amlocal.workspace",
    "ComputeTarget": "amlocal.compute",
    "AmlCompute": "amlocal.compute",
    "ComputeTargetException": "amlocal.compute",
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
