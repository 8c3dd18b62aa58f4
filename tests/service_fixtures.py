"""What the web service tests share: a Chainer MNIST model trained once, test digits, a run
history with the model registered, and the removal of every container a test's services made
(even when the test fails)."""

import gzip
import subprocess
import sys

import numpy as np
import pytest

from conftest import MNIST_DIR, TRAINER_DIR

SERVICE_LABEL = "amlocal.home"


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory):
    """model.npz of the seed's MLP after 2 epochs on the 8,000 training digits (~90% right)."""
    out = tmp_path_factory.mktemp("trained")
    subprocess.run([sys.executable, str(TRAINER_DIR / "chainer_mnist.py"), "--epochs", "2",
                    "--data-dir", str(MNIST_DIR), "--output_dir", str(out)], check=True,
                   capture_output=True, timeout=300)
    return out / "model.npz"


@pytest.fixture(scope="session")
def test_digits():
    """(images as lists of 784 floats, labels) of the first 100 MNIST test digits."""
    with gzip.open(MNIST_DIR / "t10k-images-idx3-ubyte.gz") as images_file:
        images = np.frombuffer(images_file.read(), np.uint8, offset=16).reshape(-1, 784) / 255
    with gzip.open(MNIST_DIR / "t10k-labels-idx1-ubyte.gz") as labels_file:
        labels = np.frombuffer(labels_file.read(), np.uint8, offset=8)
    return images[:100].round(4).tolist(), labels[:100].tolist()


def remove_containers_of(docker_client, home):
    for container in docker_client.containers.list(
            all=True, filters={"label": f"{SERVICE_LABEL}={home}"}):
        container.remove(force=True)


def containers_of(docker_client, home):
    return docker_client.containers.list(all=True, filters={"label": f"{SERVICE_LABEL}={home}"})


@pytest.fixture
def model_home(amlocal_home, docker_client, trained_model):
    """A run history with the trained model registered as mnist:1; its services' containers
    are removed when the test ends, whatever happened."""
    register(amlocal_home, "mnist", trained_model)
    yield amlocal_home
    remove_containers_of(docker_client, amlocal_home)


def register(home, name, path):
    """Register a local model file (Model.register insists that it is under the current folder)."""
    from amlocal.backends.history.store import RunStore
    from amlocal.backends.registries import HistoryModelRegistry

    return HistoryModelRegistry(RunStore(home)).register(name, str(path))


def accuracy(answer, labels):
    return sum(int(got == want) for got, want in zip(answer, labels)) / len(labels)
