"""Finding and reading a workspace configuration file (config.json), as azureml-core does.

Shared by the SDK's `Workspace.from_config()` (amlocal/workspace.py) and the Azure backend
(backends/azure/backend.py), which may not import the SDK's shapes. Nothing here touches the
network: the file only names a workspace.
"""

import json
import os

from amlocal.errors import UserInputError

# azureml-core's search order: folders first, then file names, each from the start folder up.
CONFIG_DIRS = (".azureml", "aml_config", None)
CONFIG_FILES = ("config.json", "project.json")


class WorkspaceConfigError(UserInputError):
    """A workspace configuration file that cannot be read or names no workspace."""


def find_config(path=".", file_name=None):
    """The configuration file found from `path` (a file, or a folder searched from it up through
    its parents), or None. `file_name` replaces the names looked for (config.json, project.json).
    """
    start = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(start):
        return start
    names = (file_name,) if file_name else CONFIG_FILES
    for folder in CONFIG_DIRS:
        for name in names:
            relative = os.path.join(folder, name) if folder else name
            current = start
            while True:
                candidate = os.path.join(current, relative)
                if os.path.isfile(candidate):
                    return candidate
                parent = os.path.dirname(current)
                if parent == current:
                    break
                current = parent
    return None


def read_config(found):
    """(subscription_id, resource_group, workspace_name) of a config file, as azureml-core reads
    them (a "Scope" resource id wins over the three keys); WorkspaceConfigError where it cannot."""
    try:
        with open(found, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError) as error:
        raise WorkspaceConfigError(f"cannot read the workspace configuration file {found}: "
                                   f"{error}") from None
    if not isinstance(config, dict):
        raise WorkspaceConfigError(f"the workspace configuration file {found} is not a JSON object")
    scope = config.get("Scope")
    if scope:
        pieces = scope.split("/")
        if len(pieces) < 9:
            raise WorkspaceConfigError(f"the Scope in {found} is not an Azure ML workspace's "
                                       "resource id")
        return pieces[2], pieces[4], pieces[8]
    if not all(key in config for key in ("subscription_id", "resource_group", "workspace_name")):
        raise WorkspaceConfigError(
            f"The config file found in: {found} does not seem to contain the required parameters. "
            "Please make sure it contains your subscription_id, resource_group and workspace_name.")
    return config["subscription_id"], config["resource_group"], config["workspace_name"]
