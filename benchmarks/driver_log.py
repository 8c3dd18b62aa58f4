"""Does the driver log keep every line of a script that prints fast, on both executors, and how
long does it take? Measured side by side, interleaved.

    .venv/bin/python benchmarks/driver_log.py [--lines 2000000] [--repeat 3]

The script prints --lines lines (`print(f"line {i}")`, ~200 MB for 2,000,000 lines; the run's
PYTHONUNBUFFERED makes each print a write). Each repeat runs it once through each executor, in
turns, as a user would: `amlocal run SRC --script train.py --executor X > /dev/null` in a new
process, so the terminal side (every line rendered by the CLI's EventPrinter, written to stdout)
is paid exactly as at a terminal, only into /dev/null. For each run it prints the wall time, the
lines kept in azureml-logs/70_driver_log.txt, and whether the last line is there; then each
executor's median and docker's median over process's (target: at most 1.5).
Uses a throwaway AMLOCAL_HOME. Needs a Docker engine and a base image (see README).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from throwaway import throwaway_source

AMLOCAL = [sys.executable, "-m", "amlocal"]
EXECUTORS = ("process", "docker")


def run_once(source, executor, expected_last):
    """One `amlocal run ... > /dev/null`; returns (seconds, lines kept, last line there)."""
    started = time.perf_counter()
    result = subprocess.run([*AMLOCAL, "run", str(source), "--script", "train.py", "--executor",
                             executor, "--quiet-build"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    run_id = result.stderr.split("RunId: ", 1)[1].split()[0]
    if result.returncode != 0:
        sys.exit(f"{executor} run {run_id} failed:\n{result.stderr}")
    log = Path(os.environ["AMLOCAL_HOME"]) / "runs" / run_id / "azureml-logs" / "70_driver_log.txt"
    lines = log.read_bytes().splitlines()
    return seconds, len(lines), bool(lines) and lines[-1] == expected_last.encode()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    source = throwaway_source(f"for i in range({args.lines}):\n    print(f'line {{i}}')\n")
    warm = source.parent / "warm"
    warm.mkdir()
    (warm / "train.py").write_text("print('warm')\n")
    run_once(warm, "docker", "warm")  # builds or finds the image; not timed

    times = {executor: [] for executor in EXECUTORS}
    print(f"{args.lines:,} lines, `amlocal run ... > /dev/null`, {args.repeat} round(s)")
    print(f"{'round':>5}  {'executor':<8}  {'wall_s':>7}  {'lines kept':>11}  last line")
    for round_number in range(1, args.repeat + 1):
        for executor in EXECUTORS:
            seconds, kept, last = run_once(source, executor, f"line {args.lines - 1}")
            times[executor].append(seconds)
            print(f"{round_number:>5}  {executor:<8}  {seconds:7.2f}  {kept:>11,}  "
                  f"{'yes' if last else 'NO'}", flush=True)
    medians = {executor: statistics.median(values) for executor, values in times.items()}
    for executor in EXECUTORS:
        print(f"median {executor:<8} {medians[executor]:.2f} s")
    print(f"docker / process: {medians['docker'] / medians['process']:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
