"""Datastore v1.0: the workspace's default datastore, `workspaceblobstore`, an Azure blob
container of the emulator's blob store.

`ws.get_default_datastore()`, `Datastore.get(ws, "workspaceblobstore")` and `ws.datastores` read
it here, with a container SAS (read, list, write; the workspace token's lifetime) as its
credential, so `datastore.upload(...)`, `upload_files(...)` and `download(...)` go through the
https route (proxy.py) to the blob store (blobs.py). Inside a run, a datastore path is a folder
of the blob store: `datastore_folder` gives it (to mount read-only) and `BlobStore.copy_to`
copies it.
"""

import os
import stat

from amlocal.errors import UserInputError
from amlocal.service.blobs import BlobStore, check_blob_name
from amlocal.service.config import BLOB_ACCOUNT, BLOB_DOMAIN, WorkspaceIdentity
from amlocal.service.errors import not_found
from amlocal.service.tokens import WORKSPACE_TOKEN_SECONDS
from amlocal.service.wire import WS, operation

DEFAULT_DATASTORE = "workspaceblobstore"
DATASTORES = "/datastore/v1.0" + WS


def datastore_container(identity):
    """The blob container of the workspace's default datastore (Azure's name for it)."""
    return f"azureml-blobstore-{identity.workspace_id}"


def datastore_folder(home, datastore_name, path=""):
    """The host path that is `path` of datastore `datastore_name` in the run history at
    `home`, for a run to mount read-only, readable by the run's user: the file where `path`
    names a blob, else the folder of blobs under it (made if missing). UserInputError for
    another datastore; blobs.BlobError for a path that could leave the datastore."""
    if datastore_name != DEFAULT_DATASTORE:
        raise UserInputError(f"datastore {datastore_name!r} does not exist: the emulator has "
                             f"{DEFAULT_DATASTORE!r} only")
    store = BlobStore(home)
    container = datastore_container(WorkspaceIdentity.of_home(home))
    parts = check_blob_name(path.strip("/")) if path.strip("/") else ()
    if parts:
        blob = store.folder(container, "/".join(parts[:-1])) / parts[-1]
        if blob.is_file() and not blob.is_symlink():
            blob.chmod(stat.S_IMODE(blob.stat().st_mode) | 0o444)
            return blob
    folder = store.folder(container, path)
    readable_by_all(folder)
    return folder


def readable_by_all(top):
    """Let any user read `top` and what is under it, following no link.

    The blob store keeps what it receives owner-only, but a root submitter's script runs as
    an unprivileged user (backends/local/ownership.py) that must read the data it mounts, as
    a job on Azure reads its mounted datastore."""
    for _path, dirnames, filenames, dir_fd in os.fwalk(top, follow_symlinks=False):
        os.chmod(dir_fd, stat.S_IMODE(os.fstat(dir_fd).st_mode) | 0o555)
        for name in filenames:
            try:
                mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
                if stat.S_ISREG(mode):
                    os.chmod(name, stat.S_IMODE(mode) | 0o444, dir_fd=dir_fd)
            except FileNotFoundError:  # (replaced or deleted meanwhile)
                pass


def datastore_dto(service, with_secret=True):
    container = datastore_container(service.identity)
    sas = (BlobStore(service.home, service.tokens).sas_query(
        container, "", write=True, prefix=True, seconds=WORKSPACE_TOKEN_SECONDS)
        if with_secret else None)
    return {"name": DEFAULT_DATASTORE, "dataStoreType": "AzureBlob", "hasBeenValidated": True,
            "tags": {},
            "azureStorageSection": {
                "accountName": BLOB_ACCOUNT, "containerName": container,
                "endpoint": BLOB_DOMAIN, "protocol": "https", "credentialType": "Sas",
                "credential": sas, "isSas": True, "sasToken": sas, "accountKey": None,
                "blobCacheTimeout": 0, "subscriptionId": service.identity.subscription_id,
                "resourceGroup": service.identity.resource_group}}


@operation(DATASTORES + "/default", ["GET"])
def get_default(call):
    return datastore_dto(call.service)


@operation(DATASTORES + "/datastores/{name}", ["GET"])
def get_datastore(call):
    if call.params["name"] != DEFAULT_DATASTORE:
        raise not_found(f"datastore {call.params['name']!r} does not exist: the emulator has "
                        f"{DEFAULT_DATASTORE!r} only")
    return datastore_dto(call.service)


@operation(DATASTORES + "/datastores", ["GET"])
def list_datastores(call):
    with_secret = call.query.get("includeSecret", "true").lower() != "false"
    return {"value": [datastore_dto(call.service, with_secret)], "continuationToken": None,
            "nextLink": None}


ROUTES = [get_default, get_datastore, list_datastores]
