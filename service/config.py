"""The workspace the emulator serves, and the config file it leaves for clients while it runs.

One emulator serves one workspace over one run history ($AMLOCAL_HOME). Its names are fixed, so
a config.json written once keeps working; its id is derived from the history's path, so two
homes are two workspaces to azureml-core's discovery cache.
"""

import json
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "amlocal"
WORKSPACE_NAME = "local"
LOCATION = "local"
CONFIG_NAME = "config.json"


def emulator_dir(home):
    return Path(home) / "emulator"


def config_path(home):
    return emulator_dir(home) / CONFIG_NAME


@dataclass(frozen=True)
class WorkspaceIdentity:
    subscription_id: str
    resource_group: str
    workspace_name: str
    workspace_id: str

    @classmethod
    def of_home(cls, home):
        workspace_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"amlocal:{Path(home).resolve()}"))
        return cls(SUBSCRIPTION_ID, RESOURCE_GROUP, WORKSPACE_NAME, workspace_id)

    @property
    def arm_id(self):
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace_name}")

    def experiment_id(self, name):
        """An experiment's id: derived from the workspace and its name, so stable unstored."""
        return str(uuid.uuid5(uuid.UUID(self.workspace_id), name))

    def matches(self, subscription_id, resource_group, workspace_name):
        # ARM treats resource group and resource names case-insensitively.
        return (subscription_id.lower() == self.subscription_id.lower()
                and resource_group.lower() == self.resource_group.lower()
                and workspace_name.lower() == self.workspace_name.lower())


def write_config(home, identity, endpoint):
    """Write config.json (readable by its owner only) whole or not at all: it is written under a
    name of its own and renamed into place."""
    path = config_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"subscription_id": identity.subscription_id,
                "resource_group": identity.resource_group,
                "workspace_name": identity.workspace_name, "endpoint": endpoint}
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def remove_config(home, endpoint):
    """Remove config.json if it is still this emulator's (another one may have started since)."""
    path = config_path(home)
    try:
        if read_config(path).get("endpoint") == endpoint:
            path.unlink()
    except (OSError, ValueError):
        pass


def read_config(path):
    """The config file's document (a dict); OSError or ValueError when it is missing or bad."""
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a JSON object")
    return document


