"""What a web service is deployed with, checked, and how its record is shown: the checks of
the entry script, source folder and resources, where models go in the container and what
AZUREML_MODEL_DIR says, its URIs (backends/local/services.py runs the service)."""

import secrets

from amlocal.errors import UserInputError
from amlocal.validation import usable_path

APP_ROOT = "/var/azureml-app"
MODELS_FOLDER = "azureml-models"


def base_url(record):
    return f"http://127.0.0.1:{record['port']}" if record.get("port") else None


def scoring_uri(record):
    return f"{base_url(record)}/score" if record.get("port") else None


def swagger_uri(record):
    return f"{base_url(record)}/swagger.json" if record.get("port") else None


def model_mount(model):
    return f"{APP_ROOT}/{MODELS_FOLDER}/{model['name']}/{model['version']}"


def model_dir_variable(models):
    """AZUREML_MODEL_DIR as Azure ML sets it: the one model's folder, or the folder of all."""
    return model_mount(models[0]) if len(models) == 1 else f"{APP_ROOT}/{MODELS_FOLDER}"


def new_keys():
    return {"primaryKey": secrets.token_urlsafe(24), "secondaryKey": secrets.token_urlsafe(24)}


def checked_source(entry_script, source_dir):
    """{entry_script (relative to source_dir, posix), source_dir (absolute)}, checked."""
    source = usable_path(source_dir, "source_directory").resolve()
    if not source.is_dir():
        raise UserInputError(f"source_directory {str(source_dir)!r} is not a folder")
    entry = usable_path(entry_script, "entry_script")
    script = (entry if entry.is_absolute() else source / entry).resolve()
    if not script.is_relative_to(source):
        raise UserInputError(f"entry_script {str(entry_script)!r} is not inside the source "
                             f"folder {source}")
    if not script.is_file():
        raise UserInputError(f"entry_script {str(entry_script)!r} is not a file in {source}")
    return {"entry_script": script.relative_to(source).as_posix(), "source_dir": str(source)}


def checked_resources(port, cpu_cores, memory_gb):
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 1 <= port <= 65535):
        raise UserInputError(f"port must be an integer in range [1, 65535], got {port!r}")
    for what, value in (("cpu_cores", cpu_cores), ("memory_gb", memory_gb)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not value > 0):
            raise UserInputError(f"{what} must be a number above 0, got {value!r}")
    return {"port": port, "cpu_cores": cpu_cores, "memory_gb": memory_gb}


def describe(record):
    """What a service's record shows a user (its keys left out: `amlocal services keys`)."""
    settings = record["settings"]
    return {"name": record["name"], "kind": record["kind"], "state": record["state"],
            "error": record["error"], "scoring_uri": scoring_uri(record),
            "swagger_uri": swagger_uri(record), "port": record["port"], "image": record["image"],
            "models": [f"{model['name']}:{model['version']}" for model in settings["models"]],
            "entry_script": settings["entry_script"], "source_dir": settings["source_dir"],
            "auth_enabled": record["auth_enabled"], "cpu_cores": settings["cpu_cores"],
            "memory_gb": settings["memory_gb"], "tags": record["tags"],
            "description": record["description"], "created_at": record["created_at"],
            "updated_at": record["updated_at"]}
