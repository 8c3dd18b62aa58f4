"""Shared fixtures. Tests run against real parts: a real run history on disk, a real Docker engine.

The Docker tests need an engine that answers. Where there is none they fail (CI must run them);
on a host that has no Docker at all, set AMLOCAL_SKIP_DOCKER_TESTS=1 to skip them explicitly.
"""

import atexit
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
