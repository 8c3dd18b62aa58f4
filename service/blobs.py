"""The emulator's blob store, and Azure Blob storage's wire for it (Put Blob, Put Block, Put
Block List, Get Blob, Get Blob Properties, List Blobs), as azureml-core's vendored
azure-storage-blob client speaks it through the https route (proxy.py).

Blobs live under $AMLOCAL_HOME/emulator/blobs/{container}/{name}. Names come from clients and are
untrusted: they are checked (`name_parts`: relative, no `..`/`.`/empty parts, no NUL, bounded
length) and every write and read goes through `RunFolder` (directory descriptors, no link ever
followed, only regular files opened). A blob is received into a temporary file first (its size
bounded, its Content-MD5 checked) and renamed into place whole. A file system cannot hold both a
blob `a` and a blob `a/b` (Azure can): the second is refused with 409.

Every request carries a SAS the emulator issued (`BlobStore.sas_query`): its `sig` is one of the
emulator's tokens (tokens.py) whose scope names the permissions, the container and the blob name
(or a name prefix), and whose expiry is the SAS's; the other SAS fields are there for the client,
which keeps only the SAS fields it knows.

The container `azureml` is not a store: its names `ExperimentRun/dcid.{run id}/{path}` are runs'
files (artifacts.py), written into the run's folder, so `amlocal runs show` and
`get_file_names` list an upload at once.
"""

import base64
import datetime
import email.utils
import hashlib
import os
import re
import secrets
import shutil
import time
import uuid
from urllib.parse import urlencode
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from starlette.responses import Response, StreamingResponse
from starlette.routing import Host, Route, Router

from amlocal.backends.history.run_folder import (NotARunFile, RunFolder, name_parts, printable,
                                                 write_file)
from amlocal.errors import UserInputError
from amlocal.service.config import BLOB_HOST, emulator_dir
from amlocal.service.tokens import InvalidToken, TokenIssuer

BLOBS_FOLDER = "blobs"
INCOMING = ".incoming"  # not a container name (they start with a letter or digit)
ARTIFACT_CONTAINER = "azureml"
SAS_SCOPE = "blob:"
SAS_SECONDS = 3600
SAS_VERSION = "2021-08-06"
MAX_BLOB_BYTES = 5000 << 20  # Azure's limit for one Put Blob
MAX_BLOCK_BYTES = 4000 << 20  # Azure's limit for one Put Block
MAX_BLOCKS = 50_000  # Azure's limit of blocks in a blob
MAX_BLOCK_LIST_BYTES = 8 << 20
UNCOMMITTED_BLOCK_SECONDS = 7 * 24 * 3600
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}\Z")
_CHUNK = 1 << 20


class BlobError(Exception):
    """A refusal, rendered as Azure Storage's error: an XML body and x-ms-error-code."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def check_container(container):
    if not isinstance(container, str) or not _CONTAINER.match(container):
        raise BlobError(400, "InvalidResourceName",
                        f"invalid container name {container!r}: 3 to 63 lowercase letters, "
                        "digits and single hyphens, starting and ending with a letter or digit")


def check_blob_name(name):
    """The parts of blob name `name`; BlobError 400 for a name that could leave its container."""
    try:
        return name_parts(name, "blob name")
    except UserInputError as error:
        raise BlobError(400, "InvalidResourceName", str(error)) from None


class BlobStore:
    """The emulator's blob containers under `home` ($AMLOCAL_HOME), and the SAS for them.

        store = BlobStore(home)
        url = store.sas_url("snapshots", "abc/train.py", write=True)   # for a client's PUT
        with store.open("snapshots", "abc/train.py") as handle: ...
        store.names("snapshots", prefix="abc/")                    # ["abc/train.py", ...]
        store.copy_to("datastore-container", "mnist/", folder)     # files under folder/
        store.folder("datastore-container", "mnist")               # a host path (to mount)
    """

    def __init__(self, home, tokens=None):
        self.root = emulator_dir(home) / BLOBS_FOLDER
        self.tokens = tokens or TokenIssuer(emulator_dir(home) / "token-secret")

    # -- signatures -----------------------------------------------------------------------------

    def sas_query(self, container, name="", *, write=False, prefix=False, seconds=SAS_SECONDS):
        """A SAS query string for blob `name` of `container` (prefix: every name starting with
        it; "" is the whole container): read, plus write when `write`, for `seconds`."""
        check_container(container)
        permissions = "rlw" if write else "rl"
        token = self.tokens.issue(f"{SAS_SCOPE}{permissions}:{'p' if prefix else 'b'}:"
                                  f"{container}/{name}", seconds)
        expiry = int(time.time()) + int(seconds)  # the token's own, to the second (for display)
        return urlencode({"sv": SAS_VERSION, "sr": "c" if prefix else "b", "sp": permissions,
                          "se": _iso(expiry), "sig": token})

    def sas_url(self, container, name, write=False, seconds=SAS_SECONDS):
        """The https URL of blob `name` with a SAS for it (see sas_query); UserInputError for a
        name that cannot be in one.

        The name is not percent-encoded: azureml-core takes the blob name from the URL's path
        as it is and its storage client encodes it once more, so the name must be there as it
        is. A name with '?' or '#' would end the path early: such a name cannot be uploaded
        through azureml-core, and is refused.
        """
        check_blob_name(name)
        if "?" in name or "#" in name:
            raise UserInputError(f"invalid blob name {printable(name)!r}: azureml-core cannot "
                                 "upload a name with '?' or '#'")
        return (f"https://{BLOB_HOST}/{container}/{name}?"
                f"{self.sas_query(container, name, write=write, seconds=seconds)}")

    def check_sas(self, signature, container, name, permission):
        """BlobError 403 unless `signature` (a SAS's sig) grants `permission` ("r", "w" or
        "l") on blob `name` of `container` (for "l", `name` is the listing's prefix)."""
        try:
            claims = self.tokens.verify(signature or "")
        except InvalidToken as error:
            raise BlobError(403, "AuthenticationFailed", f"the SAS is not valid: {error}") from None
        granted = claims.scope[len(SAS_SCOPE):].split(":", 2) if claims.scope.startswith(SAS_SCOPE) else []
        if len(granted) != 3 or permission not in granted[0]:
            raise BlobError(403, "AuthorizationPermissionMismatch",
                            f"the SAS does not grant {permission!r} here")
        kind, scope_path = granted[1], granted[2]
        scope_container, _, scope_name = scope_path.partition("/")
        allowed = scope_container == container and (
            name.startswith(scope_name) if kind == "p" else name == scope_name)
        if not allowed:
            raise BlobError(403, "AuthorizationResourceTypeMismatch",
                            f"the SAS is for {scope_path!r}, not {container}/{name}")

    # -- reading --------------------------------------------------------------------------------

    def open(self, container, name):
        """Blob `name` of `container`, open for reading in binary; BlobError 404 if there is none."""
        check_container(container)
        check_blob_name(name)
        try:
            with RunFolder(self._folder_of(container)) as folder:
                return folder.open(name)
        except (NotARunFile, FileNotFoundError):
            raise BlobError(404, "BlobNotFound", f"the blob {container}/{printable(name)} does "
                            "not exist") from None

    def names(self, container, prefix=""):
        """The names of `container`'s blobs that start with `prefix`, sorted."""
        check_container(container)
        try:
            with RunFolder(self.root) as root:
                entries = root.entries(container)
        except FileNotFoundError:
            return []
        start = len(container) + 1
        return [entry.name[start:] for entry in entries
                if entry.kind == "file" and entry.name[start:].startswith(prefix)]

    def copy_to(self, container, prefix, folder):
        """Copy the blobs under `prefix` ("" or a folder-like prefix ending without "/") into
        the host folder `folder`, named by the rest of their names (checked, written without
        following links); returns how many."""
        prefix = prefix.strip("/")
        start = len(prefix) + 1 if prefix else 0
        copied = 0
        for name in self.names(container, f"{prefix}/" if prefix else ""):
            with self.open(container, name) as handle:
                write_file(folder, name[start:], handle)
            copied += 1
        return copied

    def folder(self, container, path=""):
        """The host folder holding `container`'s blobs under `path` (made if missing), for a run
        to mount read-only; its contents are what `names` lists."""
        check_container(container)
        parts = check_blob_name(path.strip("/")) if path.strip("/") else ()
        location = self._folder_of(container).joinpath(*parts)
        location.mkdir(parents=True, exist_ok=True)
        return location

    def _folder_of(self, container):
        location = self.root / container
        location.mkdir(parents=True, exist_ok=True)
        return location

    # -- writing --------------------------------------------------------------------------------

    def incoming(self):
        """The folder new blobs are received into before they take their names."""
        location = self.root / INCOMING
        location.mkdir(parents=True, exist_ok=True)
        return location

    def commit(self, container, name, temporary):
        """Give the received file `temporary` (a name in `incoming()`) the name `name` in
        `container`, replacing a blob of that name; BlobError 409 when a blob is on its path or
        a folder of blobs has its name."""
        check_container(container)
        check_blob_name(name)
        with RunFolder(self.incoming()) as incoming, RunFolder(self.root) as root:
            self._folder_of(container)
            if not root.move_from(incoming, temporary, f"{container}/{name}"):
                raise BlobError(409, "InvalidBlobName",
                                f"{container}/{printable(name)} cannot be written: a part of "
                                "its path is a blob, or blobs are under its name")


def _iso(timestamp):
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


# -- the wire -----------------------------------------------------------------------------------

def _headers(status, extra=None):
    """What every Blob service answer carries, plus `extra`."""
    return {"x-ms-version": SAS_VERSION, "x-ms-request-id": str(uuid.uuid4()),
            "Date": email.utils.formatdate(usegmt=True), **(extra or {})}


def _error(error, head=False):
    body = b"" if head else (
        f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{escape(error.code)}</Code>'
        f"<Message>{escape(error.message)}</Message></Error>").encode("utf-8")
    return Response(body, status_code=error.status, media_type="application/xml",
                    headers=_headers(error.status, {"x-ms-error-code": error.code}))


def _properties(status):
    """The headers that describe a blob whose os.stat is `status`."""
    return {"Last-Modified": email.utils.formatdate(status.st_mtime, usegmt=True),
            "ETag": f'"0x{status.st_mtime_ns:X}{status.st_size:X}"',
            "x-ms-creation-time": email.utils.formatdate(status.st_ctime, usegmt=True),
            "x-ms-blob-type": "BlockBlob", "x-ms-server-encrypted": "false",
            "x-ms-lease-state": "available", "x-ms-lease-status": "unlocked",
            "Accept-Ranges": "bytes"}


def _exists(target, container, name):
    try:
        target.open(container, name).close()
    except BlobError:
        return False
    return True


def _target(service, container):
    """Where a container's blobs are: a run's files for `azureml`, else the blob store."""
    if container == ARTIFACT_CONTAINER:
        from amlocal.service.artifacts import RunFileBlobs

        return RunFileBlobs(service, BlobStore(service.home, service.tokens))
    return BlobStore(service.home, service.tokens)


async def _receive(request, folder, limit):
    """Stream the request body into a new file in `folder`: (its name, size). The body must be
    as long as its Content-Length (at most `limit`) and match its Content-MD5 when it has one."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        raise BlobError(411, "MissingContentLengthHeader", "Content-Length is required")
    if int(declared) > limit:
        raise BlobError(413, "RequestBodyTooLarge", f"the body is over {limit} bytes")
    temporary = f"{secrets.token_hex(16)}.partial"
    path = folder / temporary
    digest, size = hashlib.md5(), 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > int(declared):
                    break
                out.write(chunk)
                digest.update(chunk)
        if size != int(declared):
            raise BlobError(400, "InvalidInput", f"the body is not {declared} bytes long")
        expected = request.headers.get("content-md5")
        if expected is not None and _b64(expected) != digest.digest():
            raise BlobError(400, "Md5Mismatch", "the MD5 of the body is not its Content-MD5")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return temporary, base64.b64encode(digest.digest()).decode("ascii")


def _b64(text):
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise BlobError(400, "InvalidHeaderValue", f"{text[:80]!r} is not base64") from None


def _block_folder(store, container, name):
    """The folder of a blob's uncommitted blocks. Blocks never committed are dropped after
    UNCOMMITTED_BLOCK_SECONDS (Azure's seven days), when another blob's first block comes."""
    key = hashlib.sha256(f"{container}/{name}".encode("utf-8", "surrogateescape")).hexdigest()
    location = store.incoming() / f"blocks-{key[:32]}"
    try:
        location.mkdir()
    except FileExistsError:
        return location
    for stale in store.incoming().glob("blocks-*"):
        if time.time() - stale.stat().st_mtime > UNCOMMITTED_BLOCK_SECONDS:
            shutil.rmtree(stale, ignore_errors=True)
    return location


def _block_file(block_id):
    if not block_id or len(block_id) > 128 or len(_b64(block_id)) > 64:
        raise BlobError(400, "InvalidQueryParameterValue", "the block id is not valid")
    return hashlib.sha256(block_id.encode("ascii", "replace")).hexdigest()[:32]


async def _put(request, store, target, container, name):
    query = request.query_params
    comp = query.get("comp")
    if comp == "block":
        folder = _block_folder(store, container, name)
        temporary, md5 = await _receive(request, folder, MAX_BLOCK_BYTES)
        os.replace(folder / temporary, folder / _block_file(query.get("blockid", "")))
        return Response(status_code=201, headers=_headers(201, {"Content-MD5": md5}))
    if comp == "blocklist":
        temporary = await _join_blocks(request, store, container, name)
        md5 = None
    elif comp is None:
        if request.headers.get("if-none-match") == "*" and _exists(target, container, name):
            raise BlobError(409, "BlobAlreadyExists", "the specified blob already exists")
        temporary, md5 = await _receive(request, store.incoming(), MAX_BLOB_BYTES)
    else:
        raise BlobError(501, "NotImplemented", f"amlocal's emulator does not emulate "
                        f"PUT ?comp={comp} on blobs")
    try:
        target.commit(container, name, temporary)
    finally:
        (store.incoming() / temporary).unlink(missing_ok=True)
    with target.open(container, name) as handle:
        extra = _properties(os.fstat(handle.fileno()))
    extra |= {"Content-MD5": md5} if md5 else {}
    return Response(status_code=201, headers=_headers(201, extra | {
        "x-ms-request-server-encrypted": "false"}))


async def _join_blocks(request, store, container, name):
    """Put Block List: the named blocks, joined in order into a new file of `incoming()`."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BLOCK_LIST_BYTES:
            raise BlobError(413, "RequestBodyTooLarge", "the block list is too long")
    try:
        ids = [element.text or "" for element in ElementTree.fromstring(body)]
    except ElementTree.ParseError as error:
        raise BlobError(400, "InvalidXmlDocument", f"the block list is not XML: {error}") from None
    if len(ids) > MAX_BLOCKS:
        raise BlobError(400, "BlockCountExceedsLimit", f"more than {MAX_BLOCKS} blocks")
    folder = _block_folder(store, container, name)
    temporary = f"{secrets.token_hex(16)}.partial"
    try:
        with open(store.incoming() / temporary, "xb") as out:
            for block_id in ids:
                try:
                    with open(folder / _block_file(block_id), "rb") as block:
                        while chunk := block.read(_CHUNK):
                            out.write(chunk)
                except FileNotFoundError:
                    raise BlobError(400, "InvalidBlockList",
                                    f"block {block_id[:80]!r} was not put") from None
    except BaseException:
        (store.incoming() / temporary).unlink(missing_ok=True)
        raise
    for block in folder.iterdir():
        block.unlink(missing_ok=True)
    folder.rmdir()
    return temporary


def _get(request, target, container, name, head):
    handle = target.open(container, name)
    status = os.fstat(handle.fileno())
    size, start, end = status.st_size, 0, status.st_size - 1
    headers = _properties(status) | {"Content-Type": "application/octet-stream"}
    asked = request.headers.get("x-ms-range") or request.headers.get("range")
    code = 200
    if asked:
        found = re.fullmatch(r"bytes=(\d+)-(\d*)", asked.strip())
        if not found or int(found.group(1)) >= size:
            handle.close()
            raise BlobError(416, "InvalidRange", "the range specified is invalid")
        start = int(found.group(1))
        end = min(int(found.group(2)) if found.group(2) else size - 1, size - 1)
        headers["Content-Range"], code = f"bytes {start}-{end}/{size}", 206
    headers["Content-Length"] = str(end - start + 1 if size else 0)
    if head:
        handle.close()
        return Response(status_code=200, headers=_headers(200, headers))
    handle.seek(start)
    return StreamingResponse(_chunks(handle, end - start + 1), status_code=code,
                             headers=_headers(code, headers))


def _chunks(handle, remaining):
    with handle:
        while remaining > 0 and (chunk := handle.read(min(_CHUNK, remaining))):
            remaining -= len(chunk)
            yield chunk


def _list(request, store, container):
    prefix = request.query_params.get("prefix", "")
    store.check_sas(request.query_params.get("sig"), container, prefix, "l")
    entries = []
    for name in store.names(container, prefix):
        with store.open(container, name) as handle:
            properties = _properties(os.fstat(handle.fileno()))
            size = os.fstat(handle.fileno()).st_size
        entries.append(f"<Blob><Name>{escape(name)}</Name><Properties>"
                       f"<Last-Modified>{properties['Last-Modified']}</Last-Modified>"
                       f"<Etag>{escape(properties['ETag'])}</Etag>"
                       f"<Content-Length>{size}</Content-Length>"
                       "<Content-Type>application/octet-stream</Content-Type>"
                       "<BlobType>BlockBlob</BlobType><LeaseStatus>unlocked</LeaseStatus>"
                       "<LeaseState>available</LeaseState></Properties></Blob>")
    body = (f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint='
            f'"https://{BLOB_HOST}/" ContainerName="{escape(container)}"><Prefix>'
            f"{escape(prefix)}</Prefix><Blobs>{''.join(entries)}</Blobs><NextMarker />"
            "</EnumerationResults>")
    return Response(body.encode("utf-8"), media_type="application/xml", headers=_headers(200))


async def blob_endpoint(request):
    """Every Blob service operation on the blob host, by method and query."""
    head = request.method == "HEAD"
    try:
        service = request.app.state.service
        container = request.path_params["container"]
        check_container(container)
        store, target = BlobStore(service.home, service.tokens), _target(service, container)
        name = request.path_params.get("name")
        if name is None:
            if request.method == "GET" and request.query_params.get("comp") == "list":
                return _list(request, store, container)
            raise BlobError(501, "NotImplemented", f"amlocal's emulator does not emulate "
                            f"{request.method} of a container")
        check_blob_name(name)
        if request.method == "DELETE":
            raise BlobError(501, "NotImplemented", "amlocal's emulator does not delete blobs")
        permission = "w" if request.method == "PUT" else "r"
        store.check_sas(request.query_params.get("sig"), container, name, permission)
        if request.method == "PUT":
            return await _put(request, store, target, container, name)
        return _get(request, target, container, name, head)
    except BlobError as error:
        return _error(error, head)
    except OSError as error:
        return _error(BlobError(500, "InternalError", f"amlocal's emulator could not store the "
                                f"blob: {error.strerror}"), head)


ROUTES = [[Host(BLOB_HOST, app=Router(routes=[
    Route("/{container}", blob_endpoint, methods=["GET", "HEAD", "PUT", "DELETE"]),
    Route("/{container}/{name:path}", blob_endpoint, methods=["GET", "HEAD", "PUT", "DELETE"]),
]))]]
