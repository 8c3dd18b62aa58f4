"""Shared fixtures. Tests run against real parts: a real run history on disk, a real Docker engine.

The Docker tests need an engine that answers. Where there is none they fail (CI must run them);
on a host that has no Docker at all, set AMLOCAL_SKIP_DOCKER_TESTS=1 to skip them explicitly.
"""

import atexit
import contextlib
import functools
import importlib.util
import os
import shutil
import site
import sys
import tempfile
import venv
from pathlib import Path

import pytest

# Runs sample their CPU and memory into their metrics every 5 s (backends/local/system_metrics
# .py): off for the suite, so a test that checks a run's metrics exactly is not at the mercy of
# how long the run took; tests/test_system_metrics.py turns it on. Set here, before any fixture
# starts a process (`amlocal serve`, a supervisor), so that every one of them inherits it.
os.environ.setdefault("AMLOCAL_SYSTEM_METRICS_S", "0")

REPO = Path(__file__).resolve().parents[1]
TRAINER_DIR = REPO / "trainer"
MNIST_DIR = REPO / "tests" / "data" / "mnist-10k"


@pytest.fixture
def amlocal_home(tmp_path, monkeypatch):
    """A fresh, empty run history for one test, named by AMLOCAL_HOME as a user would."""
    home = tmp_path / "amlocal-home"
    monkeypatch.setenv("AMLOCAL_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def docker_client():
    from amlocal.backends.local import engine
    from amlocal.errors import EngineUnavailableError

    try:
        return engine.connect()
    except EngineUnavailableError as error:
        if os.environ.get("AMLOCAL_SKIP_DOCKER_TESTS"):
            pytest.skip(f"AMLOCAL_SKIP_DOCKER_TESTS is set and {error}")
        pytest.fail(f"{error}. The Docker tests need an engine; on a host without Docker set "
                    "AMLOCAL_SKIP_DOCKER_TESTS=1 to skip them", pytrace=False)


def write_script(folder, name, body):
    """Write a small training script into a source folder; return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(body)
    return folder


@functools.lru_cache(maxsize=1)
def python_without_azureml():
    """A Python like the one running the tests, but without azureml (the `azure` extra), for
    what a run sees where azureml-core is not installed (amlocal's images, most users' Pythons).

    The test Python itself may have the extra (CI installs it to test the Azure backend); this
    one is a virtual environment whose site-packages links every entry of this one's but azureml.
    """
    if importlib.util.find_spec("azureml") is None:
        return sys.executable
    root = Path(tempfile.mkdtemp(prefix="amlocal-python-without-azureml-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    target = next((root / "lib").glob("python3*/site-packages"))
    for source in site.getsitepackages():
        for entry in Path(source).iterdir():
            if not entry.name.startswith("azureml") and not (target / entry.name).exists():
                (target / entry.name).symlink_to(entry)
    return str(root / "bin" / "python")


class Emulator:
    """A running `amlocal serve` (a real subprocess) over a run history of its own."""

    def __init__(self, home, process, endpoint):
        self.home = home
        self.process = process
        self.endpoint = endpoint

    @property
    def config_path(self):
        return self.home / "emulator" / "config.json"

    def request_log(self):
        return (self.home / "emulator" / "requests.log").read_text()


# What azureml-core must not see: a proxy to the world (a test reaches only the emulator).
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                    "all_proxy", "NO_PROXY", "no_proxy")


def emulator_environment(home, sdk_home):
    environment = {key: value for key, value in os.environ.items() if key not in _PROXY_VARIABLES}
    # HOME: azureml-core caches service discovery in ~/.azureml; each emulator is its own.
    environment.update(AMLOCAL_HOME=str(home), HOME=str(sdk_home))
    return environment


def start_emulator(home, sdk_home, *args):
    """Start `amlocal serve --port 0` over `home`; return an Emulator once it says where it is."""
    import select
    import subprocess

    # Its stderr (a line per request) goes to a file: a pipe nobody reads would fill and stop it.
    stderr_path = Path(sdk_home) / "serve-stderr.log"
    with open(stderr_path, "ab") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", "from amlocal.cli.main import main; main()", "serve",
             "--port", "0", *args], env=emulator_environment(home, sdk_home),
            stdout=subprocess.PIPE, stderr=stderr, text=True)
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("amlocal emulator listening on http://"):
        process.kill()
        raise AssertionError(f"amlocal serve said {line!r}; stderr: {stderr_path.read_text()}")
    emulator = Emulator(Path(home), process, line.split()[-1])
    emulator.stderr_path = stderr_path
    return emulator


def stop_emulator(emulator, timeout=30):
    import signal

    if emulator.process.poll() is None:
        emulator.process.send_signal(signal.SIGTERM)
    return emulator.process.wait(timeout=timeout)


# What amlocal.emulator.workspace() sets in its process for blob uploads (the https route).
BLOB_ROUTE_VARIABLES = ("HTTPS_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE",
                        "https://amlocal.blob.amlocal.internal_proxy")


@contextlib.contextmanager
def kept_environment(names):
    """Put the environment variables `names` back as they were when the block ends, whoever
    set or removed them meanwhile."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """`amlocal serve` over a fresh run history, shared by a test module; this test process
    talks to it as azureml-core's user would (AMLOCAL_HOME, its own HOME, no proxy). What
    amlocal.emulator.workspace() sets for blob uploads is undone after the module."""
    home = tmp_path_factory.mktemp("emulator-home")
    sdk_home = tmp_path_factory.mktemp("sdk-home")
    running = start_emulator(home, sdk_home)
    with kept_environment(_PROXY_VARIABLES + BLOB_ROUTE_VARIABLES), \
            pytest.MonkeyPatch.context() as patch:
        for variable in _PROXY_VARIABLES:
            patch.delenv(variable, raising=False)
        patch.setenv("AMLOCAL_HOME", str(home))
        patch.setenv("HOME", str(sdk_home))
        yield running
    stop_emulator(running)
