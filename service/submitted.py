"""The run definitions that runs submitted through the emulator came with, kept so that
`Run.get_details()["runDefinition"]` answers what azureml-core sent (its run configuration), as
Azure does. One JSON file per run under $AMLOCAL_HOME/emulator/definitions/, written whole or not
at all; a run that was not submitted through the emulator has none."""

import json
import os
import secrets

from amlocal.backends.history.store import run_folder_name
from amlocal.service.config import emulator_dir

DEFINITIONS = "definitions"


def _path(service, run_id):
    return emulator_dir(service.home) / DEFINITIONS / f"{run_folder_name(run_id)}.json"


def keep_definition(service, run_id, configuration):
    path = _path(service, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        temporary.write_text(json.dumps(configuration), encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def submitted_definition(service, run_id):
    """The run configuration the run was submitted with (a dict), or None."""
    try:
        document = json.loads(_path(service, run_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None
