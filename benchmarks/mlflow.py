"""How fast do a script's metrics land, through MLflow and through run.log, in one run? And what
does a system-metrics sample cost the run's driver?

    .venv/bin/python benchmarks/mlflow.py [--values 1000] [--executors process,docker]

One script, run once per executor: it logs --values values with `mlflow.log_metric(name, v,
step=i)` (each a request to the run's endpoint, answered once the value is in the run history),
then as many with MLflow's asynchronous logging (`synchronous=False`, then
`mlflow.flush_async_logging()`: the client sends them in log-batch requests), then as many with
`run.log(name, v)` followed by `run.flush()` where the run has it (azureml-core
sends its values in batches; amlocal's stand-in writes a telemetry line per call, read by the
driver), and prints each loop's values per second. The docker run gets `--pip mlflow-skinny`
(its image is built once, then cached); the process run uses this Python, which needs
mlflow-skinny (the test extra). Then it times the two ways a system-metrics sample is taken (the
Docker engine's one-shot stats of a container, /proc of a process tree) and says what a sample
every 5 s costs. Uses a throwaway AMLOCAL_HOME.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from throwaway import throwaway_source

AMLOCAL = [sys.executable, "-m", "amlocal"]
SCRIPT = """\
import sys, time, mlflow
from azureml.core.run import Run
count = {values}
run = Run.get_context()
mlflow.log_metric("warm", 0.0)  # the client's set-up (start_run) is not timed
started = time.perf_counter()
for i in range(count):
    mlflow.log_metric("mlflow_metric", i * 0.5, step=i)
mlflow_s = time.perf_counter() - started
started = time.perf_counter()
for i in range(count):
    mlflow.log_metric("mlflow_async_metric", i * 0.5, step=i, synchronous=False)
mlflow.flush_async_logging()
async_s = time.perf_counter() - started
started = time.perf_counter()
for i in range(count):
    run.log("aml_metric", i * 0.5)
if hasattr(run, "flush"):
    run.flush()
aml_s = time.perf_counter() - started
print("BENCH", type(run).__name__, mlflow_s, async_s, aml_s, flush=True)
"""


def run_once(source, executor, values):
    extra = ["--pip", "mlflow-skinny"] if executor == "docker" else []
    result = subprocess.run([*AMLOCAL, "run", str(source), "--script", "train.py", "--executor",
                             executor, "--quiet-build", *extra], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"the {executor} run failed:\n{result.stdout}\n{result.stderr}")
    line = next(line for line in result.stdout.splitlines() if line.startswith("BENCH "))
    _, context, mlflow_s, async_s, aml_s = line.split()
    run_id = result.stderr.split("RunId: ", 1)[1].split()[0]
    metrics = subprocess.run([*AMLOCAL, "runs", "metrics", run_id, "--json"], capture_output=True,
                             text=True, check=True).stdout
    if metrics.count(",") + 1 < 3 * values:
        sys.exit(f"the {executor} run {run_id} kept fewer values than it logged: {metrics[:200]}")
    image = json.loads(subprocess.run([*AMLOCAL, "runs", "show", run_id, "--json"],
                                      capture_output=True, text=True, check=True).stdout)["image"]
    return context, float(mlflow_s), float(async_s), float(aml_s), image


def sample_costs(image, repeat=50):
    """Median seconds of a /proc process-tree reading (of this process) and, given the docker
    run's `image`, of the one-shot stats of a container of it."""
    from amlocal.backends.local.system_metrics import (_cgroup_files, cgroup_usage,
                                                       container_usage, process_tree_usage)

    costs = {}
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        process_tree_usage(os.getpid())
        timings.append(time.perf_counter() - started)
    costs["process (/proc of the tree)"] = statistics.median(timings)
    if image is None:
        return costs
    from amlocal.backends.local import engine

    container = engine.connect().containers.run(
        image, ["sleep", "60"], detach=True,
        network_mode="none", remove=True)
    try:
        ways = {"docker (the engine's stats)": lambda: container_usage(container)}
        files = _cgroup_files(container.id)
        if files:
            ways["docker (its cgroup's files)"] = lambda: cgroup_usage(files)
        for way, read in ways.items():
            timings = []
            for _ in range(repeat if "files" in way else 5):  # the engine's take a second
                started = time.perf_counter()
                read()
                timings.append(time.perf_counter() - started)
            costs[way] = statistics.median(timings)
    finally:
        container.kill()
    return costs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=1000)
    parser.add_argument("--executors", default="process,docker")
    args = parser.parse_args()
    source = throwaway_source(SCRIPT.format(values=args.values))
    os.environ["AMLOCAL_SYSTEM_METRICS_S"] = "0"  # the loops alone

    print(f"{args.values:,} values each way, one script per executor")
    print(f"{'executor':<8}  {'run.log is':<14}  {'mlflow.log_metric/s':>19}  "
          f"{'..., synchronous=False/s':>24}  {'run.log/s':>10}")
    image = None
    for executor in args.executors.split(","):
        context, mlflow_s, async_s, aml_s, used = run_once(source, executor, args.values)
        image = used or image
        print(f"{executor:<8}  {context:<14}  {args.values / mlflow_s:>19,.0f}  "
              f"{args.values / async_s:>24,.0f}  {args.values / aml_s:>10,.0f}")
    print()
    print("a system-metrics reading (median), and its share of a 5 s interval (the engine's "
          "stats wait; the others are CPU time):")
    for way, seconds in sample_costs(image).items():
        print(f"  {way:<28} {seconds * 1000:7.2f} ms  {seconds / 5 * 100:6.3f} %")


if __name__ == "__main__":
    main()
