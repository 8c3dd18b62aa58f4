"""The emulator, served to one run by the process that drives it (lifecycle.RunDriver).

Inside every local run, azureml-core's own `Run.get_context()` is the SDK's live run: it talks
plain http to AZUREML_SERVICE_ENDPOINT with AZUREML_RUN_TOKEN. The run's driver serves that
endpoint itself, with the emulator's code (amlocal.service.app, what `amlocal serve` runs), so it
is there whether or not `amlocal serve` runs:

    script --http--> 127.0.0.1:PORT (the launcher's relay) --> <run>/emulator/api.sock (driver)

The driver listens on a Unix socket in the run's folder; the run's launcher (runtime/
amlocal_launch.py) relays connections to 127.0.0.1:PORT to it. In a container that loopback is
the container's own, so the container keeps network "none" and reaches nothing but this socket
(mounted read-only: connecting needs no write access to the mount). With the process executor
the relay listens on a free port of the host's loopback, which the driver picked (and hands to
the launcher as a listening socket, so no other process can take the port in between).

A socket rather than a network: nothing to create or remove in the Docker engine per run, no
port on the host for a container, and a driver that adopts the run (recovery.py) serves the
same path again, so the script keeps its endpoint. The in-run URL is kept beside the socket for
that adopter.

The run's token (scope run:<id>, tokens.py) lets the script read and write that run and its own
children only. azureml-core renews it through GET .../runs/{id}/token before it expires.
"""

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
URL_FILE = "url"
# Inside a container the relay listens here: the container's loopback is its own, so every run
# can have the same port.
IN_CONTAINER_PORT = 8790
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
    """A listening socket on a free port of the host's loopback (for a process-executor run)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    return listener


def _bind_unix_socket(folder):
    """A listening Unix socket at folder/SOCKET_NAME (a stale one from a dead driver replaced).

    A long path is bound through /proc/self/fd, so the run folder's depth does not matter."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            os.unlink(SOCKET_NAME, dir_fd=folder_fd)
        except FileNotFoundError:
            pass
        path = os.path.join(folder, SOCKET_NAME)
        sock.bind(path if len(path) < _UNIX_PATH_MAX else f"/proc/self/fd/{folder_fd}/{SOCKET_NAME}")
        # Owner only, and the folder's owner: a container's user, once the folder was handed to
        # it with the run's folders (ownership.py), so a driver that adopts the run and binds
        # the socket again still lets the script in.
        os.chmod(SOCKET_NAME, 0o600, dir_fd=folder_fd)
        owner = os.fstat(folder_fd)
        if owner.st_uid != os.getuid():
            os.chown(SOCKET_NAME, owner.st_uid, owner.st_gid, dir_fd=folder_fd,
                     follow_symlinks=False)
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(folder_fd)
    sock.listen(64)
    return sock


class RunEndpoint:
    """The emulator served on one run's socket, as seen from inside the run at `url`.

    The socket listens as soon as `serve` returns; the app (Starlette and uvicorn, imported
    here, a few tenths of a second) starts on a thread of its own meanwhile, while the script's
    container or process starts: a connection made before then waits in the socket's backlog.
    """

    def __init__(self, home, run):
        self.home = Path(home)
        self.run = run  # a jobs.LocalRun
        self.folder = endpoint_folder(run.run_dir)
        self.url = None
        self._server = None
        self._thread = None
        self._stopping = threading.Event()

    @property
    def socket_path(self):
        return self.folder / SOCKET_NAME

    def serve(self, url):
        """Serve the emulator for this run; the script will reach it at `url`."""
        self.folder.mkdir(exist_ok=True)
        (self.folder / URL_FILE).write_text(url + "\n")
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
        sock = _bind_unix_socket(self.folder)
        self._thread = threading.Thread(target=self._serve_on, args=(sock,), daemon=True,
                                        name=f"amlocal-endpoint-{self.run.id}")
        self._thread.start()

    def _serve_on(self, sock):
        try:
            import uvicorn

            from amlocal.service.app import create_app

            app = create_app(self.home, self.url, echo=False)
            # No logging configuration of uvicorn's own: this process's logging is the user's.
            server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning",
                                                   access_log=False, lifespan="off"))
            self._server = server
            if not self._stopping.is_set():
                server.run(sockets=[sock])
        except Exception as error:  # the script then finds its endpoint refusing, and says so
            print(f"amlocal: the run's emulator endpoint failed: {type(error).__name__}: "
                  f"{error}", file=sys.stderr)
        finally:
            sock.close()

    def variables(self, base_environment=None):
        """The environment azureml-core's Run.get_context() reads (wire document, "Inside a
        run"); `base_environment`: the proxy settings a process-executor run inherits, which
        must let 127.0.0.1 through."""
        identity = WorkspaceIdentity.of_home(self.home)
        tokens = TokenIssuer(emulator_dir(self.home) / "token-secret")
        limit = self.run.spec.max_run_duration_seconds
        seconds = min(limit + RUN_TOKEN_SECONDS, FIRST_TOKEN_SECONDS) if limit else FIRST_TOKEN_SECONDS
        # No AZUREML_RUN_TOKEN_EXPIRY: azureml-core reads the expiry from the token's `exp`.
        variables = {
            "AZUREML_ARM_SUBSCRIPTION": identity.subscription_id,
            "AZUREML_ARM_RESOURCEGROUP": identity.resource_group,
            "AZUREML_ARM_WORKSPACE_NAME": identity.workspace_name,
            "AZUREML_WORKSPACE_ID": identity.workspace_id,
            "AZUREML_EXPERIMENT_ID": identity.experiment_id(self.run.experiment),
            "AZUREML_SERVICE_ENDPOINT": self.url,
            "AZUREML_DISCOVERY_SERVICE_ENDPOINT": f"{self.url}/discovery",
            "AZUREML_RUN_TOKEN": tokens.issue(RUN_SCOPE + self.run.id, seconds),
        }
        if base_environment is not None:
            for name in ("NO_PROXY", "no_proxy"):
                variables[name] = ",".join(filter(None, (base_environment.get(name), "127.0.0.1")))
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
