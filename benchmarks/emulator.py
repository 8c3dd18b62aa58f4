"""How fast is the emulator with the real azureml-core as its client?

    .venv/bin/python benchmarks/emulator.py [--values 10000] [--repeat 3] [--executor docker]

(a) Metric ingestion: `--values` calls of `run.log("loss", i)` in one run, measured two ways:
    in-run   a local run's script (process executor: this Python, which has azureml-core), where
             Run.get_context() is the SDK's live run talking to the run's own endpoint;
    host     `Experiment.start_logging()` in this process, against `amlocal serve`.
    For each: values per second as the script sees its loop, and the time from the loop's end
    (in-run: the script's end; host: `complete()`'s start) until every value is readable in the
    run history; then that the run holds exactly the values 0 .. N-1 (none lost, none doubled),
    read back with the SDK's `get_metrics()` through the emulator (timed too).
(b) Submit to Running: `Experiment.submit(ScriptRunConfig)` through `amlocal serve` against
    `amlocal run` of the same script on the same executor (and image, already built), in turns;
    seconds from the call until the run history records the run Running.

Every figure is printed as min / median of --repeat tries, interleaved where two are compared
(the machine is shared and noisy). Uses a throwaway AMLOCAL_HOME and HOME. (b) with the docker
executor needs a Docker engine and the local base image (see README).
"""

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import time

from throwaway import throwaway_source

AMLOCAL = [sys.executable, "-m", "amlocal"]
CLUSTER = "cpu-cluster"
LOG_SCRIPT = """\
import sys, time
from azureml.core.run import Run
run = Run.get_context()
count = int(sys.argv[1])
started = time.time()
for value in range(count):
    run.log("loss", value)
print("LOOP", started, time.time(), flush=True)
"""
HELLO_SCRIPT = "print('hello from the run')\n"
# What azureml-core must not see here: a proxy to the world (the emulator is on loopback).
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def serve(workdir):
    """Start `amlocal serve --port 0` over $AMLOCAL_HOME; return the process once it listens."""
    with open(workdir / "serve.log", "ab") as log:  # a line per request
        process = subprocess.Popen([*AMLOCAL, "serve", "--port", "0"], stdout=subprocess.PIPE,
                                   stderr=log, text=True)
    ready, _, _ = select.select([process.stdout], [], [], 60)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("amlocal emulator listening on"):
        process.kill()
        sys.exit(f"amlocal serve did not start: {line!r}")
    return process


def summary(values, unit="s", digits=3):
    return (f"min {min(values):.{digits}f} {unit}, "
            f"median {statistics.median(values):.{digits}f} {unit}")


def wait_for(predicate, timeout=600, interval=0.005):
    """Poll `predicate` until it is true; the time.time() at which it was first seen true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the run history did not get there in time")
        time.sleep(interval)
    return time.time()


def all_readable(store, run_id, count):
    return lambda: len(store.get_metrics(run_id).get("loss", [])) >= count


def check_values(run, count):
    """Read the run's metrics back through the emulator: (seconds, what is wrong with them or
    "" when they are exactly 0 .. count-1, in logging order)."""
    started = time.perf_counter()
    values = run.get_metrics()["loss"]
    seconds = time.perf_counter() - started
    values = values if isinstance(values, list) else [values]
    if sorted(values) != list(range(count)):
        return seconds, f"{len(values)} values, {len(set(range(count)) - set(values))} lost"
    misplaced = sum(1 for position, value in enumerate(values) if position != value)
    return seconds, f"{misplaced} values out of logging order" if misplaced else ""


def ingest_in_run(backend, experiment, source, count):
    """(values/s, seconds from the script's end until all are readable, get_metrics seconds)."""
    from azureml.core import Run

    from amlocal.backends.base import RunSpec

    handle = backend.submit(RunSpec(source_dir=source, script="train.py", arguments=[str(count)],
                                    experiment=experiment.name, executor="process"), detach=True)
    loop = None
    while loop is None:
        log = handle.run_dir / "azureml-logs" / "70_driver_log.txt"
        lines = log.read_text().splitlines() if log.exists() else []
        loop = next((line.split()[1:] for line in lines if line.startswith("LOOP ")), None)
        if loop is None and handle.get_status() in ("Completed", "Failed", "Canceled"):
            sys.exit(f"run {handle.id} ended {handle.get_status()} without its loop's line")
        time.sleep(0.005)
    started, ended = float(loop[0]), float(loop[1])
    readable = wait_for(all_readable(backend.store, handle.id, count))
    handle.wait(timeout=600)
    return (count / (ended - started), readable - ended,
            *check_values(Run(experiment, handle.id), count))


def ingest_from_host(backend, experiment, count):
    """(values/s, seconds from complete() until all are readable, get_metrics seconds)."""
    run = experiment.start_logging(snapshot_directory=None, outputs=None)
    started = time.time()
    for value in range(count):
        run.log("loss", value)
    ended = time.time()
    run.complete()
    readable = wait_for(all_readable(backend.store, run.id, count))
    return (count / (ended - started), readable - ended, *check_values(run, count))


def running_at(store, run_id):
    return next((at for status, at in store.status_history(run_id) if status == "Running"), None)


def wait_until_ended(store, run_id):
    wait_for(lambda: store.get_status(run_id) in ("Completed", "Failed", "Canceled"),
             interval=0.05)
    if store.get_status(run_id) != "Completed":
        sys.exit(f"run {run_id} ended {store.get_status(run_id)}: {store.get_run(run_id)['error']}")


def submit_through_emulator(workspace, store, config):
    from azureml.core import Experiment

    started = time.time()
    run = Experiment(workspace, "bench-submit").submit(config)
    returned = time.time()
    wait_for(lambda: running_at(store, run.id) is not None)
    wait_until_ended(store, run.id)
    return running_at(store, run.id) - started, returned - started, store.get_run(run.id)


def submit_with_amlocal_run(store, source, executor):
    started = time.time()
    result = subprocess.run([*AMLOCAL, "run", str(source), "--script", "train.py",
                             "--executor", executor, "--recipe", "python", "--compute", CLUSTER,
                             "--experiment", "bench-cli", "--json"],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        sys.exit(f"amlocal run failed: {result.stderr.strip()[-500:]}")
    run_id = json.loads(result.stdout.splitlines()[-1])["id"]
    return running_at(store, run_id) - started, store.get_run(run_id)


def environment_for(executor, workdir):
    from azureml.core import Environment

    if executor == "process":  # the SDK's "run on the compute's own Python"
        environment = Environment("bench-host-python")
        environment.python.user_managed_dependencies = True
        return environment
    requirements = workdir / "requirements.txt"
    requirements.write_text("")  # the local base has what the script needs
    return Environment.from_pip_requirements("bench-pip", str(requirements))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--executor", choices=("docker", "process"), default="docker",
                        help="the executor of (b)'s runs (default: docker)")
    parser.add_argument("--skip", choices=("ingest", "submit"), action="append", default=[],
                        help="leave out (a) ingest or (b) submit")
    args = parser.parse_args()

    log_source = throwaway_source(LOG_SCRIPT)
    workdir = log_source.parent
    hello_source = workdir / "hello"
    hello_source.mkdir()
    (hello_source / "train.py").write_text(HELLO_SCRIPT)
    os.environ["HOME"] = str(workdir)  # azureml-core caches discovery under ~/.azureml
    for variable in _PROXY_VARIABLES:
        os.environ.pop(variable, None)
        os.environ.pop(variable.lower(), None)
    emulator = serve(workdir)
    try:
        import amlocal.emulator
        from azureml.core import Experiment, ScriptRunConfig
        from azureml.core.compute import AmlCompute, ComputeTarget

        from amlocal.backends.local import LocalBackend

        backend = LocalBackend()
        workspace = amlocal.emulator.workspace()
        if "ingest" not in args.skip:
            experiment = Experiment(workspace, "bench-metrics")
            samples = {"in-run": [], "host": []}
            for _ in range(args.repeat):
                samples["in-run"].append(ingest_in_run(backend, experiment, log_source,
                                                       args.values))
                samples["host"].append(ingest_from_host(backend, experiment, args.values))
            print(f"(a) metric ingestion, {args.values} run.log calls in one run, "
                  f"{args.repeat} tries each, interleaved")
            for name, tries in samples.items():
                rates, lags, reads, faults = zip(*tries)
                print(f"  {name:7} read back: " + "; ".join(
                    fault or f"exactly 0..{args.values - 1} in order" for fault in faults))
                print(f"  {name:7} logging: max {max(rates):,.0f} values/s, median "
                      f"{statistics.median(rates):,.0f} values/s")
                print(f"  {name:7} loop's end until all readable: {summary(lags)}; "
                      f"get_metrics of {args.values}: {summary(reads)}")
        if "submit" not in args.skip:
            ComputeTarget.create(workspace, CLUSTER, AmlCompute.provisioning_configuration(
                vm_size="STANDARD_D1_V2", max_nodes=1)).wait_for_completion(show_output=False)
            config = ScriptRunConfig(source_directory=str(hello_source), script="train.py",
                                     compute_target=CLUSTER,
                                     environment=environment_for(args.executor, workdir))
            store = backend.store
            submit_through_emulator(workspace, store, config)  # builds or finds the image
            emulated, returned, cli, images = [], [], [], set()
            for _ in range(args.repeat):
                to_running, to_return, record = submit_through_emulator(workspace, store, config)
                emulated.append(to_running)
                returned.append(to_return)
                images.add(record["image"])
                to_running, record = submit_with_amlocal_run(store, hello_source, args.executor)
                cli.append(to_running)
                images.add(record["image"])
            print(f"(b) submit to Running, {args.executor} executor, {args.repeat} tries each, "
                  f"interleaved; images: {', '.join(sorted(map(str, images)))}")
            print(f"  Experiment.submit via amlocal serve: {summary(emulated)} "
                  f"(submit() returned after {summary(returned)})")
            print(f"  amlocal run:                         {summary(cli)}")
            print(f"  ratio emulator / amlocal run: median "
                  f"{statistics.median(emulated) / statistics.median(cli):.2f}, "
                  f"min {min(emulated) / min(cli):.2f}")
    finally:
        emulator.send_signal(signal.SIGTERM)
        emulator.wait(timeout=60)


if __name__ == "__main__":
    main()
