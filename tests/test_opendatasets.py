"""Azure ML's samples read MNIST through azureml.opendatasets; inside a local run it comes from
amlocal's dataset cache, mounted read-only, never from the network (issue 13, item 6)."""

import subprocess
import sys
from pathlib import Path

import pytest

from amlocal.backends.local.opendatasets import MNIST_INPUT, uses_open_mnist
from conftest import MNIST_DIR, write_script
from test_cli import invoke, last_json

# What Azure's Chainer sample does with the data, in a script of our own: the same imports and
# calls (Dataset imported beside the data code, MNIST's file dataset downloaded into a folder and
# found again with a recursive glob, NumPy 1.x's np.int), then a short training that logs Accuracy.
SAMPLE_LIKE = """
import glob, gzip, os, struct, sys
import numpy as np
from azureml.core import Dataset
from azureml.opendatasets import MNIST
from azureml.core.run import Run

def read(pattern, images):
    path = glob.glob(os.path.join(folder, "**", pattern), recursive=True)[0]
    with gzip.open(path) as handle:
        handle.read(4)
        count = struct.unpack(">I", handle.read(4))[0]
        if images:
            rows, columns = struct.unpack(">II", handle.read(8))
            return np.frombuffer(handle.read(), np.uint8).reshape(count, rows * columns) / 255.0
        return np.frombuffer(handle.read(), np.uint8)

folder = os.path.join(os.getcwd(), "data/mnist")
os.makedirs(folder, exist_ok=True)
MNIST.get_file_dataset().download(folder, overwrite=True)
x_train, y_train = read("train-images-idx3-ubyte.gz", True), read("train-labels-idx1-ubyte.gz", False)
x_test, y_test = read("t10k-images-idx3-ubyte.gz", True), read("t10k-labels-idx1-ubyte.gz", False)
run = Run.get_context()
# np.int as the sample logs it, where the run's NumPy is 1.x (--pip "numpy<1.24").
run.log("Train images", np.int(len(x_train)) if os.environ.get("NUMPY_1") else len(x_train))
# A nearest-class-mean classifier: enough to show the digits are real.
means = np.stack([x_train[y_train == digit].mean(axis=0) for digit in range(10)])
predicted = np.argmin(((x_test[:, None, :] - means[None]) ** 2).sum(axis=2), axis=1)
run.log("Accuracy", float((predicted == y_test).mean()))
try:
    MNIST.get_file_dataset().download(folder)
except FileExistsError as error:
    print("refused:", error)
"""


def fill_cache(home):
    invoke("datasets", "fetch", "mnist", "--from-dir", str(MNIST_DIR))
    return Path(home) / "datasets" / "mnist"


def run_sample(tmp_path, *options):
    source = write_script(tmp_path / "sample", "train.py", SAMPLE_LIKE)
    result = invoke("run", str(source), "--script", "train.py", "--experiment", "opendatasets",
                    "--json", *options)
    return result, last_json(result)


def build_log(record):
    return (Path(record["run_dir"]) / "azureml-logs" / "20_image_build_log.txt").read_text()


@pytest.mark.docker
def test_a_sample_reading_open_mnist_runs_in_docker_from_the_dataset_cache(amlocal_home, tmp_path):
    cache = fill_cache(amlocal_home)

    result, record = run_sample(tmp_path, "--executor", "docker", "--pip", "numpy<1.24",
                                "--env", "NUMPY_1=1")

    assert record["status"] == "Completed", result.output
    metrics = last_json(invoke("runs", "metrics", record["id"], "--json"))
    assert metrics["Train images"] == [8000] and metrics["Accuracy"][0] > 0.6
    assert record["inputs"][MNIST_INPUT] == str(cache.resolve())
    log = build_log(record)
    assert f"amlocal gives it from its dataset cache {cache}" in log
    assert f"from local dir {MNIST_DIR}" in log and "mounted read-only" in log
    driver_log = (Path(record["run_dir"]) / "azureml-logs" / "70_driver_log.txt").read_text()
    assert "the 4 files come from amlocal's dataset cache" in driver_log
    assert "refused:" in driver_log and "overwrite=True" in driver_log


def test_the_cache_is_filled_on_first_use_and_reused(amlocal_home, tmp_path):
    # The process executor's Python has azureml-core: the stand-in joins its azureml namespace.
    result, record = run_sample(tmp_path, "--executor", "process")

    assert record["status"] == "Completed", result.output
    cache = Path(amlocal_home) / "datasets" / "mnist"
    assert sorted(path.name for path in cache.iterdir()) == [
        "SOURCE.txt", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    source = (cache / "SOURCE.txt").read_text().strip()
    assert f"from {source}" in build_log(record) and "fetching it: " in build_log(record)

    _, again = run_sample(tmp_path, "--executor", "process")
    assert again["status"] == "Completed" and "fetching it: " not in build_log(again)
    assert f"from {source}" in build_log(again)


def test_only_runs_that_read_open_mnist_get_the_cache(amlocal_home, tmp_path):
    source = write_script(tmp_path / "plain", "train.py", "print('no data')\n")
    result = invoke("run", str(source), "--script", "train.py", "--executor", "process", "--json")
    record = last_json(result)

    assert record["status"] == "Completed" and MNIST_INPUT not in record["inputs"]
    assert not (Path(amlocal_home) / "datasets").exists()


@pytest.mark.parametrize("text, reads", [
    ("from azureml.opendatasets import MNIST\n", True),
    ("import azureml.opendatasets as od\nod.MNIST.get_file_dataset()\n", True),
    ("from azureml import opendatasets\nopendatasets.MNIST\n", True),
    ("from azureml.opendatasets import NoaaIsdWeather\n", False),
    ("# MNIST, read from a folder\nimport numpy\n", False),
])
def test_what_counts_as_reading_open_mnist(tmp_path, text, reads):
    (tmp_path / "train.py").write_text(text)
    (tmp_path / "notes.txt").write_text("from azureml.opendatasets import MNIST\n")
    files = [("train.py", len(text)), ("notes.txt", 40)]
    assert uses_open_mnist(tmp_path, files) is reads


def test_the_stand_in_says_what_it_does_not_emulate(tmp_path):
    runtime = Path(__file__).resolve().parents[1] / "backends" / "local" / "runtime" / "opendatasets"
    probe = ("import sys; sys.path.insert(0, %r)\n"
             "from azureml.opendatasets import MNIST\n"
             "for call in (MNIST.get_tabular_dataset, lambda: MNIST.get_file_dataset().download('x')):\n"
             "    try:\n        call()\n    except Exception as error:\n        print(type(error).__name__, error)\n"
             % str(runtime))
    printed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             cwd=tmp_path, check=True).stdout
    assert "tabular dataset is not emulated" in printed
    assert "this run has no dataset cache mounted" in printed
    assert "Traceback" not in printed
