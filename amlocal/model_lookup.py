"""Where `Model.get_model_path` finds a model: the registry's own copy (checked), or where
azureml-core looks without a workspace ($AML_APP_ROOT/azureml-models/<name>/<version>/, then
./<name>). See amlocal/model.py's opening comment for the rules."""

import os

from amlocal.errors import UserInputError
from amlocal.model_errors import ModelNotFoundException, WebserviceException, _models


def registry_path(model_name, version, registry):
    """The registry's copy of the model, checked; ModelNotFoundException naming what there is."""
    models = _models()
    try:
        return str(registry.verified_path(model_name, version))
    except (models.ModelNotFoundError, UserInputError):
        found = sorted(f"{record['name']}/{record['version']}"
                       for record in registry.list() if "corrupted" not in record)
        raise ModelNotFoundException(f"Model/Version {model_name}/{version} not found in "
                                     f"workspace. {found}") from None


def local_path(model_name, version=None):
    """Where azureml-core looks without a workspace: the models cache, then ./<name>."""
    if version is not None and not isinstance(version, int):
        raise WebserviceException("version should be an int")
    if model_name is None:
        raise WebserviceException("model_name is None")
    models_dir = cache_dir()
    candidate = os.path.join(models_dir, model_name)
    if not os.path.exists(candidate):
        return _local_path_from_root(model_name)
    if version is None:
        versions = [int(entry) for entry in os.listdir(candidate) if entry.isdigit()]
        if not versions:
            raise WebserviceException("versions is empty")
        version = max(versions)
    candidate = os.path.join(candidate, str(version))
    if not os.path.exists(candidate):
        return _local_path_from_root(model_name)
    entries = os.listdir(candidate)
    if len(entries) != 1:
        raise WebserviceException(f"Dir {candidate} can contain only 1 file or folder. "
                                  f"Found {entries}")
    return os.path.join(candidate, entries[0])


def _local_path_from_root(model_name):
    if os.path.exists(model_name):
        return model_name
    raise ModelNotFoundException(
        f"Model {model_name} not found in cache at {cache_dir()} or in current working "
        f"directory {os.getcwd()}. For more info, set logging level to DEBUG.")


def cache_dir():
    """azureml-core's MODELS_DIR: $AML_APP_ROOT/azureml-models (read when asked, not at import)."""
    return os.path.join(os.environ.get("AML_APP_ROOT", ""), "azureml-models")


def run_registry():
    """The registry of the run history this process runs in as a local run, else None."""
    run_id = os.environ.get("AZUREML_RUN_ID")
    if not run_id:
        return None
    from amlocal.backends import default_home, get_backend
    from amlocal.errors import RunNotFoundError

    home = default_home()
    if not (home / "amlocal.db").is_file():
        return None  # a run history this process cannot see (a container, another machine)
    backend = get_backend("local", home=home)
    try:
        backend.get_run(run_id)
    except RunNotFoundError:
        return None
    return backend.models()
