"""The workspace the emulator serves, and the config file it leaves for clients while it runs.

One emulator serves one workspace over one run history ($AMLOCAL_HOME). Its names are fixed, so
a config.json written once keeps working; its id is derived from the history's path, so two
homes are two workspaces to azureml-core's discovery cache.
"""

import json
import os
import secrets
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "amlocal"
WORKSPACE_NAME = "local"
LOCATION = "local"
CONFIG_NAME = "config.json"
# The blob host the emulator names in its SAS URIs. azureml-core reads a SAS URI's host as
# {account}.blob.{suffix} (_file_utils/upload.py); the suffix is under `.internal`, a top-level
# domain reserved for private use, so a client without the emulator's proxy can never send a
# run's files to a real storage account of that name.
BLOB_ACCOUNT = "amlocal"
BLOB_DOMAIN = "amlocal.internal"
BLOB_HOST = f"{BLOB_ACCOUNT}.blob.{BLOB_DOMAIN}"
# A proxy for the blob host alone: Python's urllib.request.getproxies() (which requests, and so
# azureml-core's storage client, reads) takes every `<key>_proxy` variable, and requests picks
# the one keyed `scheme://host` before the one keyed `https`. So a client whose other https goes
# direct or through its own HTTPS_PROXY keeps that, and only the emulator's blob host goes to
# the emulator's proxy.
BLOB_PROXY_VARIABLE = f"https://{BLOB_HOST}_proxy"


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


def write_config(home, identity, endpoint, blob_proxy=None):
    """Write config.json (readable by its owner only) whole or not at all: it is written under a
    name of its own and renamed into place. With `blob_proxy` (the https route's proxy URL) it
    also lists the environment a client needs for blob uploads (client_environment)."""
    path = config_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"subscription_id": identity.subscription_id,
                "resource_group": identity.resource_group,
                "workspace_name": identity.workspace_name, "endpoint": endpoint}
    if blob_proxy is not None:
        document |= {"blob_proxy": blob_proxy,
                     "environment": client_environment(home, endpoint, blob_proxy, {})}
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


def client_environment(home, endpoint, blob_proxy, environ, keep_https=False):
    """The variables a client process needs for blob uploads through the https route, given
    its environment `environ`: the emulator's CONNECT proxy for the blob host, NO_PROXY (the
    emulator's own http endpoint goes direct: an IP entry, as `localhost` makes requests bypass
    the proxy for every host), REQUESTS_CA_BUNDLE (the bundle the client trusts now, plus the
    emulator's CA, so its other https traffic verifies as before). Only what must change is
    returned.

    The proxy is HTTPS_PROXY when the client has none and need not keep its other https
    (`keep_https` false); else BLOB_PROXY_VARIABLE, so that the client's own HTTPS_PROXY, or its
    direct https, stays as it was for every other host (the emulator's proxy refuses them)."""
    from amlocal.service.tls import ca_bundle

    changes = {}
    own_proxy = environ.get("https_proxy") or environ.get("HTTPS_PROXY")
    if blob_proxy in (own_proxy, environ.get(BLOB_PROXY_VARIABLE)):
        pass  # routed so before, by this function
    elif own_proxy or keep_https:
        changes[BLOB_PROXY_VARIABLE] = blob_proxy
    else:
        changes["HTTPS_PROXY"] = blob_proxy
    emulator_host = urlsplit(endpoint).hostname
    no_proxy = environ.get("NO_PROXY") or environ.get("no_proxy") or ""
    if emulator_host not in [entry.strip() for entry in no_proxy.split(",")]:
        # Both spellings when the client has the lowercase one: Python prefers it.
        for name in ("NO_PROXY", "no_proxy") if "no_proxy" in environ else ("NO_PROXY",):
            changes[name] = ",".join(filter(None, [no_proxy, emulator_host]))
    # requests trusts REQUESTS_CA_BUNDLE, else CURL_CA_BUNDLE, else certifi's: whichever this
    # client trusts now is what the new bundle starts from.
    base = environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE") or None
    if base is not None and os.path.isdir(base):
        warnings.warn(f"REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE names a folder ({base}): add the "
                      f"emulator's CA ({home}/emulator/tls/ca.pem) to it for blob uploads")
        return changes
    bundle = str(ca_bundle(home, base))
    if environ.get("REQUESTS_CA_BUNDLE") != bundle:
        changes["REQUESTS_CA_BUNDLE"] = bundle
    return changes
