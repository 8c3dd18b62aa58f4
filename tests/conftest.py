"""Shared fixtures. Tests run against real parts: a real run history on disk, a real Docker engine.

The Docker tests need an engine that answers. Where there is none they fail (CI must run them);
on a host that has no Docker at all, set AMLOCAL_SKIP_DOCKER_TESTS=1 to skip them explicitly.
"""

import os
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
