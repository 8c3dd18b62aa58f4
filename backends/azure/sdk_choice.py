"""Which Azure ML SDK `--backend azure` speaks: v1 (azureml-core, the `azure` extra) or v2
(azure-ai-ml, the `azure-v2` extra).

The first of these that says: the caller's choice (`--sdk`), the AMLOCAL_AZURE_SDK environment
variable, `sdk = "v1"|"v2"` in the `[azure]` table of an amlocal.toml in the current folder or
one above it; else v1. v1 stays the default: it is the contract amlocal emulates (the scripts,
the SDK shapes), and v2 cannot yet follow a job's log or read its metrics and files.
"""

import os
import tomllib
from pathlib import Path

from amlocal.errors import UserInputError

SDKS = ("v1", "v2")
DEFAULT_SDK = "v1"
ENVIRONMENT_VARIABLE = "AMLOCAL_AZURE_SDK"
SETTINGS_FILE = "amlocal.toml"


def _checked(value, where):
    sdk = str(value).strip().lower()
    if sdk not in SDKS:
        raise UserInputError(f"{where}: unknown Azure ML SDK {value!r}: use one of "
                             f"{', '.join(SDKS)}")
    return sdk


def settings_file(start=None):
    """The nearest amlocal.toml from `start` (default: the current folder) up, or None."""
    folder = Path(start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / SETTINGS_FILE).is_file():
            return candidate / SETTINGS_FILE
    return None


def chosen_sdk(explicit=None, start=None):
    """"v1" or "v2": see the module docstring; UserInputError for a value that is neither, or
    an amlocal.toml that cannot be read."""
    if explicit is not None:
        return _checked(explicit, "--sdk")
    if os.environ.get(ENVIRONMENT_VARIABLE):
        return _checked(os.environ[ENVIRONMENT_VARIABLE], ENVIRONMENT_VARIABLE)
    found = settings_file(start)
    if found is None:
        return DEFAULT_SDK
    try:
        settings = tomllib.loads(found.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise UserInputError(f"cannot read {found}: {error}") from None
    azure = settings.get("azure", {})
    if not isinstance(azure, dict) or "sdk" not in azure:
        return DEFAULT_SDK
    return _checked(azure["sdk"], f"{found} [azure] sdk")
