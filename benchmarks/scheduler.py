"""How well does a local compute target keep its nodes busy? Twelve runs on two nodes.

    .venv/bin/python benchmarks/scheduler.py [--runs 12] [--nodes 2] [--seconds 1.0]

Creates a STANDARD_D1_V2 target with --nodes nodes in a throwaway AMLOCAL_HOME, submits --runs
docker runs of a script that sleeps --seconds, all at once from one process, and reads back their
recorded stage times. Prints the largest number of runs that ran at once (must not exceed the
nodes), whether nodes were handed out in submission order, the achieved parallelism (busy
script-seconds / wall seconds, at most the node count), and the hand-off: how long a node stood
free between one run's end and the next run's start (mean and max). Queued runs are woken when a
node is freed (backends/local/queue_wake.py), so the hand-off is milliseconds, not a poll.
Needs a Docker engine and a base image (see README).
"""

import argparse
import datetime
import statistics
import sys
import time

from throwaway import throwaway_source


def seconds(iso):
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()

    source = throwaway_source("import sys, time\ntime.sleep(float(sys.argv[1]))\n",
                              prefix="amlocal-sched-")

    from amlocal.backends.base import RunSpec
    from amlocal.backends.local import LocalBackend
    from amlocal.backends.local.compute import ComputeTargets, TargetSpec

    backend = LocalBackend()
    ComputeTargets(backend.store).create(
        TargetSpec("bench", "STANDARD_D1_V2", max_nodes=args.nodes, allow_overcommit=True))
    spec = RunSpec(source_dir=source, script="train.py", arguments=(str(args.seconds),),
                   executor="docker", compute="bench")
    warm = backend.submit(spec).wait()  # builds or finds the image; not timed
    if warm["status"] != "Completed":
        sys.exit(f"warm-up run ended {warm['status']}: {warm['error']}")

    submitted = time.time()
    handles = [backend.submit(spec) for _ in range(args.runs)]
    results = [handle.wait() for handle in handles]
    finished = time.time()
    failed = [d["id"] for d in results if d["status"] != "Completed"]
    if failed:
        sys.exit(f"runs did not complete: {failed}")

    running = [next(s for s in d["stages"] if s["name"] == "Running") for d in results]
    spans = sorted((seconds(s["started_at"]), seconds(s["ended_at"])) for s in running)
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans],
                   key=lambda edge: (edge[0], edge[1]))
    current = peak = 0
    for _moment, change in edges:
        current += change
        peak = max(peak, current)
    allocated = [d["nodes"][0]["allocated_at"] for d in results]
    busy = sum(end - start for start, end in spans)
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    # A node freed at the k-th run's end is taken by the (k + nodes)-th run's start.
    gaps = [spans[k + args.nodes][0] - spans[k][1] for k in range(len(spans) - args.nodes)]

    print(f"{args.runs} runs of a {args.seconds:g} s script on {args.nodes} node(s), docker executor")
    print(f"most runs at once:          {peak} (limit {args.nodes}: {'ok' if peak <= args.nodes else 'OVER'})")
    print(f"nodes in submission order:  {'yes' if allocated == sorted(allocated) else 'NO'}")
    print(f"achieved parallelism:       {busy / wall:.2f} (busy {busy:.1f} s over {wall:.1f} s)")
    print(f"hand-off of a freed node:   {statistics.mean(gaps):.3f} s mean, {max(gaps):.3f} s max "
          "(a node idle between one run's end and the next run's start)")
    print(f"running stage per run:      {statistics.mean(e - s for s, e in spans):.3f} s mean "
          f"(script {args.seconds:g} s + container start and stop)")
    print(f"submission to last end:     {finished - submitted:.1f} s "
          f"(ideal {args.runs / args.nodes * args.seconds:.1f} s of script time)")


if __name__ == "__main__":
    main()
