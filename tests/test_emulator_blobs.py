"""The emulator's https route for blobs, its blob store, snapshots, artifact uploads and the
default datastore, with the real azureml-core 1.61 (and its vendored azure-storage client) as the
client against a real `amlocal serve` subprocess: the blob PUTs go through HTTPS_PROXY to the
emulator's CONNECT listener, over TLS that the emulator's per-home CA vouches for."""

import hashlib
import os
import socket
import ssl
import stat

import pytest
import requests

from conftest import BLOB_ROUTE_VARIABLES, kept_environment, write_script

pytest.importorskip("azureml.core", reason="the azure extra (CI installs it)")

from azureml.core import Datastore, Experiment, Run  # noqa: E402

import amlocal.emulator  # noqa: E402
from amlocal.backends.base import RunSpec  # noqa: E402
from amlocal.backends.local import LocalBackend  # noqa: E402
from amlocal.service.blobs import BlobStore  # noqa: E402
from amlocal.service.config import BLOB_HOST, WorkspaceIdentity, read_config  # noqa: E402
from amlocal.service.datastores import datastore_container, datastore_folder  # noqa: E402
from amlocal.service.snapshots import materialize  # noqa: E402

@pytest.fixture
def ws(emulator):
    """A workspace from amlocal.emulator.workspace(), which sets this process's environment
    for the https route (from none of it set; undone after the test)."""
    with kept_environment(BLOB_ROUTE_VARIABLES):
        for variable in BLOB_ROUTE_VARIABLES:
            os.environ.pop(variable, None)
        yield amlocal.emulator.workspace()


def _proxy_address(emulator):
    proxy = read_config(emulator.config_path)["blob_proxy"]
    host, port = proxy.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _proxy_answer(emulator, request):
    with socket.create_connection(_proxy_address(emulator), timeout=10) as connection:
        connection.sendall(request)
        return connection.recv(4096).decode("ascii", "replace")


def _through_the_tunnel(emulator, method, target, body=b"", ca=None):
    """One request, sent as written (no URL normalization), over TLS through the proxy; the
    answer's head and start as text. The emulator's CA alone is trusted (not the bundle)."""
    context = ssl.create_default_context(
        cafile=str(ca or emulator.home / "emulator" / "tls" / "ca.pem"))
    with socket.create_connection(_proxy_address(emulator), timeout=10) as raw:
        raw.sendall(f"CONNECT {BLOB_HOST}:443 HTTP/1.1\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200 ")
        with context.wrap_socket(raw, server_hostname=BLOB_HOST) as tunnel:
            tunnel.sendall(f"{method} {target} HTTP/1.1\r\nHost: {BLOB_HOST}\r\n"
                           f"x-ms-blob-type: BlockBlob\r\nContent-Length: {len(body)}\r\n"
                           "Connection: close\r\n\r\n".encode() + body)
            return tunnel.recv(4096).decode("utf-8", "replace")


def _tree(folder):
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


# -- the https route --------------------------------------------------------------------------

def test_the_https_route_is_only_ever_the_blob_host(emulator):
    for request in (b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n",
                    f"CONNECT {BLOB_HOST}:80 HTTP/1.1\r\n\r\n".encode(),
                    b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
                    b"\xff\xfe garbage\r\n\r\n"):
        assert _proxy_answer(emulator, request).startswith("HTTP/1.1 403 ")
    assert "CONNECT refused: CONNECT pypi.org:443 HTTP/1.1 403" in emulator.request_log()

    answer = _proxy_answer(emulator, f"CONNECT {BLOB_HOST}:443 HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith("HTTP/1.1 200 ")


def test_the_emulators_certificate_is_its_own_and_its_ca_can_vouch_for_nothing_else(emulator):
    from cryptography import x509

    tls = emulator.home / "emulator" / "tls"
    assert stat.S_IMODE((tls / "server-key.pem").stat().st_mode) == 0o600
    assert sorted(path.name for path in tls.iterdir() if "key" in path.name) == ["server-key.pem"]
    ca = x509.load_pem_x509_certificate((tls / "ca.pem").read_bytes())
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    assert [name.value for name in constraints.permitted_subtrees] == ["amlocal.internal"]

    answer = _through_the_tunnel(emulator, "GET", "/snapshots/x", ca=tls / "ca.pem")
    assert answer.startswith("HTTP/1.1 403 ") and "x-ms-error-code: AuthenticationFailed" in answer


def test_workspace_sets_the_route_and_keeps_the_users_other_https_trust(ws, emulator):
    import certifi

    config = read_config(emulator.config_path)
    assert os.environ["HTTPS_PROXY"] == config["blob_proxy"] == config["environment"]["HTTPS_PROXY"]
    assert os.environ["NO_PROXY"] == "127.0.0.1"
    bundle = open(os.environ["REQUESTS_CA_BUNDLE"], "rb").read()
    trusted_before = os.environ.get("CURL_CA_BUNDLE") or certifi.where()  # what requests used
    assert bundle.startswith(open(trusted_before, "rb").read().rstrip(b"\n"))
    assert (emulator.home / "emulator" / "tls" / "ca.pem").read_bytes() in bundle


def test_the_route_starts_from_the_bundle_the_client_trusts_and_keeps_its_proxy(tmp_path):
    from amlocal.service.config import client_environment

    own = tmp_path / "corporate.pem"
    own.write_bytes(b"-----BEGIN CERTIFICATE-----\ncorporate\n-----END CERTIFICATE-----\n")
    home = tmp_path / "home"

    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        changes = client_environment(home, "http://127.0.0.1:5000", "http://127.0.0.1:6000",
                                     {variable: str(own), "HTTPS_PROXY": "http://corp:3128",
                                      "NO_PROXY": "internal.example"})
        assert "HTTPS_PROXY" not in changes  # the user's proxy is theirs to keep, for other hosts
        # ... and the blob host alone goes to the emulator's proxy
        assert changes["https://amlocal.blob.amlocal.internal_proxy"] == "http://127.0.0.1:6000"
        assert changes["NO_PROXY"] == "internal.example,127.0.0.1"
        bundle = open(changes["REQUESTS_CA_BUNDLE"], "rb").read()
        assert bundle.startswith(own.read_bytes())
        assert bundle.endswith((home / "emulator" / "tls" / "ca.pem").read_bytes())


# -- snapshots --------------------------------------------------------------------------------

def test_a_snapshot_made_by_azureml_core_materializes_byte_exact(ws, emulator, tmp_path):
    from azureml._restclient.snapshots_client import SnapshotsClient

    source = tmp_path / "src"
    write_script(source, "train.py", "print('hi')\n")
    write_script(source / "pkg" / "deep", "données é.txt", "accents\n")
    (source / "pkg" / "weights.bin").write_bytes(bytes(range(256)) * 1000)
    (source / "empty.txt").write_bytes(b"")
    client = SnapshotsClient(ws.service_context)

    first = client.create_snapshot(str(source))
    written = materialize(emulator.home, first, tmp_path / "out1")

    assert _tree(tmp_path / "out1") == _tree(source)
    assert written == sorted(_tree(source))

    # The client's cache makes the second snapshot upload only the changed file.
    (source / "train.py").write_text("print('changed')\n")
    second = client.create_snapshot(str(source))
    materialize(emulator.home, second, tmp_path / "out2")

    assert second != first
    assert _tree(tmp_path / "out2") == _tree(source)
    assert (tmp_path / "out1" / "train.py").read_text() == "print('hi')\n"


def test_materialize_refuses_an_unknown_snapshot_and_writes_nothing_through_a_link(
        emulator, ws, tmp_path):
    from azureml._restclient.snapshots_client import SnapshotsClient

    from amlocal.errors import UserInputError

    with pytest.raises(UserInputError, match="invalid snapshot id"):
        materialize(emulator.home, "../../etc", tmp_path / "out")
    with pytest.raises(UserInputError, match="there is no snapshot"):
        materialize(emulator.home, "00000000-0000-0000-0000-000000000001", tmp_path / "out")

    source = write_script(tmp_path / "src" / "sub", "a.txt", "a\n").parent
    snapshot = SnapshotsClient(ws.service_context).create_snapshot(str(source))
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").symlink_to(outside)

    with pytest.raises(UserInputError, match="link"):
        materialize(emulator.home, snapshot, tmp_path / "out")
    assert list(outside.iterdir()) == []


# -- artifact uploads -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def completed_run(emulator, tmp_path_factory):
    source = write_script(tmp_path_factory.mktemp("src"), "train.py", "print('done')\n")
    handle = LocalBackend(emulator.home).submit(RunSpec(source_dir=source, script="train.py",
                                                        experiment="uploads", executor="process"))
    assert handle.wait()["status"] == "Completed"
    return handle.id


def test_upload_file_from_outside_the_run_lands_in_its_files(ws, emulator, completed_run,
                                                            tmp_path):
    from amlocal.backends.history.store import RunStore

    run = Run(Experiment(ws, "uploads"), completed_run)
    payload = os.urandom(300_000)
    (tmp_path / "report.bin").write_bytes(payload)

    run.upload_file("reports/report.bin", str(tmp_path / "report.bin"))
    run.upload_file("outputs/extra.txt", str(write_script(tmp_path, "extra.txt", "x") / "extra.txt"))

    assert {"reports/report.bin", "outputs/extra.txt"} <= set(run.get_file_names())
    assert {"reports/report.bin", "outputs/extra.txt"} <= set(
        RunStore(emulator.home).file_names(completed_run))
    run.download_file("reports/report.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == payload

    with pytest.raises(Exception, match="already has an artifact"):
        run.upload_file("reports/report.bin", str(tmp_path / "report.bin"))
    with pytest.raises(Exception, match="'..' parts are not allowed"):
        run.upload_file("../../escape.txt", str(tmp_path / "report.bin"))
    assert not (emulator.home / "escape.txt").exists()


# -- the blob store's checks ------------------------------------------------------------------

def _put(url, body, **headers):
    return requests.put(url, data=body, headers={"x-ms-blob-type": "BlockBlob", **headers},
                        timeout=30)


def test_a_sas_is_scoped_to_its_blob_its_permission_and_its_time(ws, emulator):
    store = BlobStore(emulator.home)
    url = store.sas_url("snapshots", "scoped/a.txt", write=True)

    assert _put(url, b"data").status_code == 201
    other = url.replace("scoped/a.txt", "scoped/b.txt")
    assert _put(other, b"data").headers["x-ms-error-code"] == "AuthorizationResourceTypeMismatch"
    read_only = store.sas_url("snapshots", "scoped/a.txt")
    assert _put(read_only, b"data").headers["x-ms-error-code"] == "AuthorizationPermissionMismatch"
    assert requests.get(read_only, timeout=30).content == b"data"
    expired = store.sas_url("snapshots", "scoped/a.txt", write=True, seconds=-1)
    assert _put(expired, b"data").headers["x-ms-error-code"] == "AuthenticationFailed"
    forged = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    assert _put(forged, b"data").status_code == 403
    bad_md5 = _put(url, b"data", **{"Content-MD5": "AAAAAAAAAAAAAAAAAAAAAA=="})
    assert bad_md5.status_code == 400 and bad_md5.headers["x-ms-error-code"] == "Md5Mismatch"
    assert requests.get(read_only, timeout=30).content == b"data"  # unchanged
    assert [path.name for path in store.incoming().iterdir()] == []  # nothing half-written


def test_blob_names_cannot_leave_the_store(ws, emulator):
    store = BlobStore(emulator.home)
    token_for_all = store.sas_query("snapshots", "", write=True, prefix=True)
    for name in ("a/../../../../escape.txt", "a/%2e%2e/%2E%2E/../../escape.txt", "a//b", "./x",
                 "a/b/", "nul%00byte"):
        answer = _through_the_tunnel(emulator, "PUT", f"/snapshots/{name}?{token_for_all}", b"x")
        assert answer.startswith("HTTP/1.1 400 "), (name, answer)
        assert "x-ms-error-code: InvalidResourceName" in answer
    assert not list(emulator.home.rglob("escape.txt"))
    assert _put(f"https://{BLOB_HOST}/snapshots/file?{token_for_all}", b"x").status_code == 201
    under_a_file = _put(f"https://{BLOB_HOST}/snapshots/file/below?{token_for_all}", b"x")
    assert under_a_file.status_code == 409


def test_a_large_blob_arrives_in_blocks(ws, emulator):
    from azureml._vendor.azure_storage.blob import BlobClient

    store = BlobStore(emulator.home)
    stale = store.incoming() / "blocks-never-committed"  # a client that gave up, 8 days ago
    stale.mkdir()
    (stale / "block").write_bytes(b"x")
    os.utime(stale, (os.path.getmtime(stale) - 8 * 24 * 3600,) * 2)
    payload = os.urandom(3 * 1024 * 1024 + 17)
    client = BlobClient(f"https://{BLOB_HOST}", "snapshots", "big/blocks.bin",
                        credential=store.sas_query("snapshots", "big/", write=True, prefix=True),
                        max_single_put_size=1024 * 1024, max_block_size=512 * 1024)

    client.upload_blob(payload, blob_type="BlockBlob", validate_content=True)

    assert client.get_blob_properties().size == len(payload)
    assert client.download_blob().readall() == payload
    with store.open("snapshots", "big/blocks.bin") as handle:
        assert hashlib.sha256(handle.read()).digest() == hashlib.sha256(payload).digest()
    assert list(store.incoming().iterdir()) == []  # the blocks joined, the stale ones dropped


# -- the default datastore --------------------------------------------------------------------

def test_the_default_datastore_uploads_into_the_blob_store(ws, emulator, tmp_path):
    datastore = ws.get_default_datastore()
    assert (datastore.name, datastore.datastore_type) == ("workspaceblobstore", "AzureBlob")
    assert list(ws.datastores) == ["workspaceblobstore"]
    assert Datastore.get(ws, "workspaceblobstore").container_name == datastore.container_name
    with pytest.raises(Exception, match="does not exist"):
        Datastore.get(ws, "otherstore")

    data = tmp_path / "mnist"
    write_script(data, "train-images.idx", "images")
    write_script(data / "sub", "labels.idx", "labels")
    (data / "sub" / "raw.bin").write_bytes(os.urandom(100_000))

    datastore.upload(src_dir=str(data), target_path="mnist", overwrite=True, show_progress=False)
    datastore.upload_files([str(data / "train-images.idx")], relative_root=str(data),
                           target_path="single", overwrite=True, show_progress=False)

    container = datastore_container(WorkspaceIdentity.of_home(emulator.home))
    store = BlobStore(emulator.home)
    assert store.names(container, "mnist/") == ["mnist/sub/labels.idx", "mnist/sub/raw.bin",
                                                "mnist/train-images.idx"]
    assert store.names(container, "single/") == ["single/train-images.idx"]
    assert store.copy_to(container, "mnist", tmp_path / "copied") == 3
    assert _tree(tmp_path / "copied") == _tree(data)
    assert _tree(datastore_folder(emulator.home, "workspaceblobstore", "mnist")) == _tree(data)

    datastore.download(str(tmp_path / "downloaded"), prefix="mnist", show_progress=False)
    assert _tree(tmp_path / "downloaded" / "mnist") == _tree(data)

    # overwrite=False: what is there already stays (azureml-core asks first, then sends
    # If-None-Match: *, which the store honours).
    (data / "train-images.idx").write_text("changed")
    datastore.upload(src_dir=str(data), target_path="mnist", overwrite=False, show_progress=False)
    with store.open(container, "mnist/train-images.idx") as handle:
        assert handle.read() == b"images"
    sas = datastore.sas_token
    refused = _put(f"https://{BLOB_HOST}/{container}/mnist/train-images.idx?{sas}", b"new",
                   **{"If-None-Match": "*"})
    assert (refused.status_code, refused.headers["x-ms-error-code"]) == (409, "BlobAlreadyExists")


def test_bad_snapshot_and_upload_requests_are_refused_in_azures_shape(ws, emulator,
                                                                      completed_run):
    headers = amlocal.emulator.auth().get_authentication_header()
    base = f"{emulator.endpoint}/content/v2.0{ws.service_context._get_workspace_scope()}"
    tree = {"name": "", "type": "Directory", "hash": "x", "timestamp": "t", "children": {
        "train.py": {"name": "train.py", "type": "File", "hash": "0" * 128, "timestamp": "t",
                     "children": {}}}}
    snapshot_id = "0f0f0f0f-0000-4000-8000-000000000000"

    for body, words in [({"DirTreeNode": tree}, "was neither uploaded nor is it in the parent"),
                        ({"DirTreeNode": tree, "ParentSnapshotId": snapshot_id},
                         "the parent snapshot"),
                        ({"DirTreeNode": {"children": {"..": {"type": "File"}}}},
                         "'..' parts are not allowed"),
                        ({"DirTreeNode": tree, "FileRevisionList": {"FileNodes": [
                            {"FullName": "train.py", "BlobUri": "https://evil.example/snapshots/x"}]}},
                         "is not a snapshot blob of this emulator"),
                        ([1, 2], "must be a JSON object")]:
        answer = requests.post(f"{base}/snapshots/{snapshot_id}", json=body, headers=headers,
                               timeout=30)
        assert answer.status_code in (400, 404), body
        assert words in answer.json()["error"]["message"]
    assert requests.post(f"{base}/snapshots/not-a-uuid", json={}, headers=headers,
                         timeout=30).status_code == 400
    assert requests.post(f"{base}/snapshots/getblob", json={"FileNames": ["../x"]},
                         headers=headers, timeout=30).status_code == 400

    artifacts = (f"{emulator.endpoint}/artifact/v2.0{ws.service_context._get_workspace_scope()}"
                 f"/artifacts/batch/metadata/ExperimentRun/dcid.{completed_run}")
    answer = requests.post(artifacts, json={"paths": "outputs/x"}, headers=headers, timeout=30)
    assert answer.status_code == 400
    answer = requests.post(artifacts, json={"paths": [{"path": "a?b"}, {"path": "ok.txt"}]},
                           headers=headers, timeout=30)
    assert answer.status_code == 200
    assert list(answer.json()["errors"]) == ["a?b"] and list(answer.json()["artifacts"]) == ["ok.txt"]
