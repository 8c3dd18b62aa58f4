"""The chainer_mnist payload on its own: data errors, determinism, and the scoring contract.

The trainer runs as a script (as in a run), with amlocal's run-side API on its path for
`from azureml.core.run import Run`; outside a run that API prints what would be logged.
"""

import gzip
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from amlocal.backends.local.lifecycle import RUNTIME_DIR
from conftest import MNIST_DIR, TRAINER_DIR


def run_trainer(*args, env_extra=None, cwd=None):
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("AZUREML_")}  # outside any run, unless env_extra says so
    env.update(PYTHONPATH=str(RUNTIME_DIR), **(env_extra or {}))
    return subprocess.run([sys.executable, str(TRAINER_DIR / "chainer_mnist.py"), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd)


def test_missing_data_dir_is_a_one_line_error(tmp_path):
    result = run_trainer("--epochs", 1, cwd=tmp_path)

    assert result.returncode != 0
    assert "--data-dir" in result.stderr and "Traceback" not in result.stderr


def test_malformed_idx_file_is_named(tmp_path):
    data = tmp_path / "mnist"
    shutil.copytree(MNIST_DIR, data)
    (data / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01garbage"))

    result = run_trainer("--epochs", 1, "--data-dir", data, cwd=tmp_path)

    assert result.returncode != 0
    assert "t10k-labels-idx1-ubyte.gz" in result.stderr and "Traceback" not in result.stderr


def test_data_dir_defaults_to_the_mnist_data_reference(tmp_path):
    result = run_trainer("--epochs", 1, "--output_dir", tmp_path / "out",
                         env_extra={"AZUREML_DATAREFERENCE_mnist": str(MNIST_DIR)}, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Attempted to log scalar metric Accuracy:" in result.stdout  # offline run prints
    assert (tmp_path / "out" / "model.npz").is_file()


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    first = run_trainer("--epochs", 2, "--data-dir", MNIST_DIR, "--output_dir", folder / "a", cwd=folder)
    second = run_trainer("--epochs", 2, "--data-dir", MNIST_DIR, "--output_dir", folder / "b", cwd=folder)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    return folder, first.stdout, second.stdout


def test_same_seed_gives_the_same_model(trained_model):
    folder, first_log, second_log = trained_model

    with np.load(folder / "a" / "model.npz") as first, np.load(folder / "b" / "model.npz") as second:
        assert sorted(first.files) == sorted(second.files)  # Chainer keeps child links in a set
        assert all(np.array_equal(first[name], second[name]) for name in first.files)
    accuracies = [line for line in first_log.splitlines() if line.startswith("epoch")]
    assert len(accuracies) == 2
    assert [line.split("(")[0] for line in accuracies] == [
        line.split("(")[0] for line in second_log.splitlines() if line.startswith("epoch")]


SCORE = """
import json, sys
sys.path.insert(0, {trainer!r})
import score
from chainer_mnist import load_mnist
images, labels = load_mnist({data!r}, 'test')
score.init()
predicted = score.run(json.dumps({{'data': images[:200].tolist()}}))
print(json.dumps({{'accuracy': sum(p == t for p, t in zip(predicted, labels[:200].tolist())) / 200,
                  'bad': score.run('{{"rows": []}}'), 'short': score.run('{{"data": [[0.5, 0.5]]}}')}}))
"""


def test_score_script_serves_the_trained_model(trained_model):
    folder, _first, _second = trained_model
    code = SCORE.format(trainer=str(TRAINER_DIR), data=str(MNIST_DIR))

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, AZUREML_MODEL_DIR=str(folder / "a")))

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["accuracy"] >= 0.85
    assert "data" in report["bad"]["error"] and "784" in report["short"]["error"]
