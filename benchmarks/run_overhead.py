"""How much does amlocal add to a plain `docker run`? Measured side by side, interleaved.

    .venv/bin/python benchmarks/run_overhead.py [--repeat 10]

For the same tiny script in the same (cached) environment image it times, in turns:
  bare     `docker run --rm --network none --init -v SRC:/wd -w /wd IMAGE python train.py`
  cli      `amlocal run SRC --script train.py --executor docker` (a whole new process, as a user
           runs it: Python start-up, snapshot, history, stages, log streaming, post-processing)
  api      LocalBackend().submit(spec).wait() inside one Python process (no start-up cost)
and prints the median and best wall time of each, amlocal's overhead over bare (target: under
1.5 s), and the Preparing stage's duration when the image is already cached (target: under 1 s).
Uses a throwaway AMLOCAL_HOME. Needs a Docker engine and a base image (see README).
"""

import argparse
import statistics
import subprocess
import sys
import time

from throwaway import throwaway_source

AMLOCAL = [sys.executable, "-m", "amlocal"]
SCRIPT = "print('hello from the run')\n"


def timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    source = throwaway_source(SCRIPT)

    from amlocal.backends.base import RunSpec
    from amlocal.backends.local import LocalBackend

    backend = LocalBackend()
    spec = RunSpec(source_dir=source, script="train.py", executor="docker")
    warm = backend.submit(spec).wait()  # builds or finds the image; not timed
    if warm["status"] != "Completed":
        sys.exit(f"warm-up run {warm['id']} ended {warm['status']}: {warm['error']}")
    image = warm["image"]

    bare_command = ["docker", "run", "--rm", "--network", "none", "--init", "-v", f"{source}:/wd",
                    "-w", "/wd", image, "python", "train.py"]
    cli_command = [*AMLOCAL, "run", str(source), "--script", "train.py", "--executor", "docker"]

    def run_checked(command):
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    preparing = []

    def api_run():
        details = backend.submit(spec).wait()
        assert details["status"] == "Completed", details["error"]
        preparing.append(details["stages"][0]["duration_s"])

    samples = {"bare": [], "cli": [], "api": []}
    for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits all alike
        samples["bare"].append(timed(lambda: run_checked(bare_command)))
        samples["cli"].append(timed(lambda: run_checked(cli_command)))
        samples["api"].append(timed(api_run))

    print(f"image {image}, {args.repeat} runs each, interleaved; wall seconds")
    print(f"{'':6} {'median':>8} {'best':>8}")
    for name, values in samples.items():
        print(f"{name:6} {statistics.median(values):8.3f} {min(values):8.3f}")
    bare = statistics.median(samples["bare"])
    for name in ("cli", "api"):
        overhead = statistics.median(samples[name]) - bare
        verdict = "ok" if overhead < 1.5 else "OVER TARGET"
        print(f"overhead {name} - bare: {overhead:+.3f} s (target < 1.5 s: {verdict})")
    verdict = "ok" if max(preparing) < 1.0 else "OVER TARGET"
    print(f"Preparing with a cached image: median {statistics.median(preparing):.3f} s, "
          f"max {max(preparing):.3f} s (target < 1 s: {verdict})")


if __name__ == "__main__":
    main()
