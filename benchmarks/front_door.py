"""How quick is the front door? `amlocal runs list` against a bare `python -c "import click"`.

    .venv/bin/python benchmarks/front_door.py [--repeat 7]

Runs each command --repeat times as a fresh process (the way a user's shell does), on an empty
throwaway AMLOCAL_HOME, and prints the fastest of each, side by side, and their ratio. The
fastest run is the one least disturbed by other work on the machine.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The `amlocal` console script of this Python's environment, as a user's shell starts it.
AMLOCAL = Path(sys.executable).with_name("amlocal")


def fastest(command, repeat, env):
    """The least wall time, in seconds, of `repeat` runs of `command` (each must succeed)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - started)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="amlocal-front-door-") as home:
        env = {**os.environ, "AMLOCAL_HOME": str(Path(home) / "amlocal-home")}
        click_s = fastest([sys.executable, "-c", "import click"], args.repeat, env)
        runs_list_s = fastest([str(AMLOCAL), "runs", "list"], args.repeat, env)
    print(f"python -c 'import click'  {click_s * 1000:7.1f} ms  (min of {args.repeat})")
    print(f"amlocal runs list         {runs_list_s * 1000:7.1f} ms  (min of {args.repeat})")
    print(f"ratio                     {runs_list_s / click_s:7.2f} x")


if __name__ == "__main__":
    main()
