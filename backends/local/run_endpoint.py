"""The emulator, served to one run by the process that drives it (lifecycle.RunDriver).

Inside every local run, azureml-core's own `Run.get_context()` is the SDK's live run: it talks
plain http to AZUREML_SERVICE_ENDPOINT with AZUREML_RUN_TOKEN. The run's driver serves that
endpoint itself, with the emulator's code (amlocal.service.app, what `amlocal serve` runs), so it
is there whether or not `amlocal serve` runs:

    script --http--> 127.0.0.1:PORT (the launcher's relay) --> <run>/emulator/api.sock (driver)
    blob PUTs --CONNECT--> 127.0.0.1:PORT2 (relay) --> <run>/emulator/blob.sock --TLS ended,
        piped--> api.sock

azureml-core uploads blobs (run.upload_file, log_image, ./outputs at the end) only over https to
the blob host, so the driver also serves the emulator's https route (service/proxy.py BlobProxy:
CONNECT to the blob host only, TLS with the emulator's certificate) on a second socket, in the
same event loop as the app; the script gets a proxy variable for it and REQUESTS_CA_BUNDLE
naming the emulator's CA (in a container a copy beside the sockets, ca.pem: the certificate
only, never a key).

The driver listens on Unix sockets in the run's folder; the run's launcher (runtime/
amlocal_launch.py) relays connections to 127.0.0.1:PORT (and PORT2) to them. In a container that
loopback is the container's own, so the container keeps network "none" and reaches nothing but
these sockets (mounted read-only: connecting needs no write access to the mount). With the
process executor the relays listen on free ports of the host's loopback, which the driver
picked (and hands to the launcher as listening sockets, so no other process can take a port in
between); such a script keeps its other https as it was (direct or through the user's own
HTTPS_PROXY): only the blob host goes to the emulator's route (service/config.py
client_environment).

A socket rather than a network: nothing to create or remove in the Docker engine per run, no
port on the host for a container, and a driver that adopts the run (recovery.py) serves the
same path again, so the script keeps its endpoint. The in-run URL is kept beside the socket for
that adopter.

The run's token (scope run:<id>, tokens.py) lets the script read and write that run and its own
children only. azureml-core renews it through GET .../runs/{id}/token before it expires.
"""

import asyncio
import os
import shutil
import socket
import sys
import threading
from pathlib import Path

from amlocal.service.config import WorkspaceIdentity, emulator_dir
from amlocal.service.tokens import RUN_SCOPE, RUN_TOKEN_SECONDS, TokenIssuer
from amlocal.validation import setting

ENDPOINT_FOLDER = "emulator"
SOCKET_NAME = "api.sock"
BLOB_SOCKET_NAME = "blob.sock"  # the https route for blob uploads
CA_NAME = "ca.pem"  # the emulator's CA certificate, for the script's REQUESTS_CA_BUNDLE
URL_FILE = "url"
# Inside a container the relays listen here: the container's loopback is its own, so every run
# can have the same ports.
IN_CONTAINER_PORT = 8790
IN_CONTAINER_BLOB_PORT = 8791
# The first token lasts as long as the run may (at most 30 days: azureml-core turns `exp` into a
# datetime); azureml-core renews it from then on.
FIRST_TOKEN_SECONDS = 30 * 24 * 3600
# sun_path holds 108 bytes; a run folder's path may be longer.
_UNIX_PATH_MAX = 100
STOP_TIMEOUT_S = 5


def in_run_sdk():
    """AMLOCAL_IN_RUN_SDK=0: no endpoint, and where the script's Python has azureml-core its
    Run.get_context() is redirected to the stand-in (runtime/amlocal_run.py), as before amlocal
    served the SDK (an escape hatch while an operation the SDK needs is not emulated yet, such as
    run.upload_file, whose blob upload needs https)."""
    return bool(setting("AMLOCAL_IN_RUN_SDK", 1, 0, 1, whole=True))


def endpoint_folder(run_dir):
    return Path(run_dir) / ENDPOINT_FOLDER


def loopback_listener():
    """A listening socket on a free port of the host's loopback (for a process-executor run).

    TCP_NODELAY, which the connections it accepts inherit: an answer goes out as its head and
    then its body, and without it the body waits for the client's delayed ACK (40 ms on Linux),
    so that every request of the script would take 40 ms or more."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    return listener


def _bind_unix_socket(folder, name):
    """A listening Unix socket at folder/name (a stale one from a dead driver replaced).

    A long path is bound through /proc/self/fd, so the run folder's depth does not matter."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            os.unlink(name, dir_fd=folder_fd)
        except FileNotFoundError:
            pass
        path = os.path.join(folder, name)
        sock.bind(path if len(path) < _UNIX_PATH_MAX else f"/proc/self/fd/{folder_fd}/{name}")
        # Owner only, and the folder's owner: a container's user, once the folder was handed to
        # it with the run's folders (ownership.py), so a driver that adopts the run and binds
        # the socket again still lets the script in.
        os.chmod(name, 0o600, dir_fd=folder_fd)
        owner = os.fstat(folder_fd)
        if owner.st_uid != os.getuid():
            os.chown(name, owner.st_uid, owner.st_gid, dir_fd=folder_fd,
                     follow_symlinks=False)
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(folder_fd)
    sock.listen(64)
    return sock


class RunEndpoint:
    """The emulator served on one run's sockets, as seen from inside the run at `url` (and its
    https route at `blob_proxy`).

    The sockets listen as soon as `serve` returns; the app (Starlette and uvicorn, imported
    here, a few tenths of a second) starts on a thread of its own meanwhile, while the script's
    container or process starts: a connection made before then waits in the socket's backlog.
    """

    def __init__(self, home, run):
        self.home = Path(home)
        self.run = run  # a jobs.LocalRun
        self.folder = endpoint_folder(run.run_dir)
        self.url = self.blob_proxy = None
        self._server = None
        self._thread = None
        self._stopping = threading.Event()

    @property
    def socket_path(self):
        return self.folder / SOCKET_NAME

    @property
    def blob_socket_path(self):
        return self.folder / BLOB_SOCKET_NAME

    def serve(self, url, blob_proxy):
        """Serve the emulator for this run; the script will reach it at `url`, and its https
        route at `blob_proxy` (an http:// proxy URL)."""
        from amlocal.service.tls import tls_files

        self.folder.mkdir(exist_ok=True)
        (self.folder / URL_FILE).write_text(url + "\n")
        shutil.copyfile(tls_files(self.home).ca, self.folder / CA_NAME)
        self.blob_proxy = blob_proxy
        self._start(url)
        return self

    def resume(self):
        """Serve again what a driver that died served (None: the run had no endpoint)."""
        try:
            url = (self.folder / URL_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        self._start(url)
        return self

    def _start(self, url):
        self.url = url
        api = _bind_unix_socket(self.folder, SOCKET_NAME)
        try:
            blob = _bind_unix_socket(self.folder, BLOB_SOCKET_NAME)
        except BaseException:
            api.close()
            raise
        self._thread = threading.Thread(target=self._serve_on, args=(api, blob), daemon=True,
                                        name=f"amlocal-endpoint-{self.run.id}")
        self._thread.start()

    def _serve_on(self, api, blob):
        # The proxy reaches the app through its socket's path; a long one through a descriptor
        # of the folder, held while serving (sun_path is short).
        folder_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            import uvicorn

            from amlocal.service.app import create_app
            from amlocal.service.proxy import BlobProxy, unix_app
            from amlocal.service.server import serve_with_proxy
            from amlocal.service.tls import server_context

            app_path = str(self.socket_path)
            if len(app_path) >= _UNIX_PATH_MAX:
                app_path = f"/proc/self/fd/{folder_fd}/{SOCKET_NAME}"
            app = create_app(self.home, self.url, echo=False)
            # No logging configuration of uvicorn's own: this process's logging is the user's.
            server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning",
                                                   access_log=False, lifespan="off"))
            proxy = BlobProxy(server_context(self.home), unix_app(app_path), app.write)
            self._server = server
            if not self._stopping.is_set():
                asyncio.run(serve_with_proxy(server, api, proxy, blob))
        except Exception as error:  # the script then finds its endpoint refusing, and says so
            print(f"amlocal: the run's emulator endpoint failed: {type(error).__name__}: "
                  f"{error}", file=sys.stderr)
        finally:
            api.close()
            blob.close()
            os.close(folder_fd)

    def variables(self, base_environment=None, ca_file=None):
        """The environment azureml-core's Run.get_context() reads (wire document, "Inside a
        run") and its blob uploads need. `base_environment`: the environment a process-executor
        run inherits, whose proxy and CA bundle settings are kept for its other traffic
        (client_environment); None: a container, which reaches nothing but its endpoint, so
        HTTPS_PROXY is the blob route and the CA file `ca_file` (its in-run path) its bundle."""
        from amlocal.service.config import client_environment
        from amlocal.service.mlflow import tracking_uri

        identity = WorkspaceIdentity.of_home(self.home)
        tokens = TokenIssuer(emulator_dir(self.home) / "token-secret")
        limit = self.run.spec.max_run_duration_seconds
        seconds = min(limit + RUN_TOKEN_SECONDS, FIRST_TOKEN_SECONDS) if limit else FIRST_TOKEN_SECONDS
        token = tokens.issue(RUN_SCOPE + self.run.id, seconds)
        # No AZUREML_RUN_TOKEN_EXPIRY: azureml-core reads the expiry from the token's `exp`.
        variables = {
            "AZUREML_ARM_SUBSCRIPTION": identity.subscription_id,
            "AZUREML_ARM_RESOURCEGROUP": identity.resource_group,
            "AZUREML_ARM_WORKSPACE_NAME": identity.workspace_name,
            "AZUREML_WORKSPACE_ID": identity.workspace_id,
            "AZUREML_EXPERIMENT_ID": identity.experiment_id(self.run.experiment),
            "AZUREML_SERVICE_ENDPOINT": self.url,
            "AZUREML_DISCOVERY_SERVICE_ENDPOINT": f"{self.url}/discovery",
            "AZUREML_RUN_TOKEN": token,
            # MLflow in the script logs into this run, as on Azure ML (service/mlflow.py), with
            # the same token: it reaches this run and its children only.
            "MLFLOW_TRACKING_URI": tracking_uri(self.url, identity.arm_id),
            "MLFLOW_RUN_ID": self.run.id,
            "MLFLOW_EXPERIMENT_ID": identity.experiment_id(self.run.experiment),
            "MLFLOW_TRACKING_TOKEN": token,
            # The run reaches nothing but its endpoint: MLflow's usage reports stay unsent.
            "MLFLOW_DISABLE_TELEMETRY": "true",
            # MLflow's "View run at <tracking URI>/#/..." would name this endpoint, where no UI
            # answers; `amlocal runs show` and `amlocal ui` name the run's page.
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        }
        if base_environment is None:
            variables |= {"HTTPS_PROXY": self.blob_proxy, "NO_PROXY": "127.0.0.1",
                          "REQUESTS_CA_BUNDLE": str(ca_file)}
        else:
            variables |= client_environment(self.home, self.url, self.blob_proxy,
                                            base_environment, keep_https=True)
        return variables

    def stop(self):
        """Stop serving (the script has ended) and remove the socket and its folder. Waited for:
        until the listening socket is closed it holds the run history's file system (a home on
        a mount of its own could not be unmounted)."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
        shutil.rmtree(self.folder, ignore_errors=True)
