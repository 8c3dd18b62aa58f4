"""How much does the local web service add to scoring? (issue 13, item 7)

    .venv/bin/python benchmarks/scoring.py [--requests 400] [--clients 8] [--rounds 4] [--auth]
                                           [--model M]

The Chainer MNIST model (trained here for 1 epoch on tests/data/mnist-10k, or --model's
model.npz) is deployed with trainer/score.py as a LocalWebservice (with --auth: an ACI-style
service with auth_enabled, every request carrying its key) in a throwaway run history, and scored
three ways on the same inputs, the first MNIST test digits:
    in-process  score.py imported into this Python, init() once, then run(json) called directly
                (this Python's NumPy and Chainer);
    in-image    the same, in a container of the service's image (its Python, NumPy < 2): run()
                as the service runs it, without the server;
    service     POST /score to the service's scoring_uri over HTTP (keep-alive sessions): the
                relay container, the scoring container's server, and run() in it.
each with one image and a batch of 100 per call, sequentially (one client) and with --clients
concurrent clients (threads, each with its own session); in-process and service take --rounds
turns (the machine may be shared and noisy), in-image runs after them. Printed: p50 / p99
latency per call (ms) and throughput (calls/s and images/s), side by side, and the service's
overhead: p50 service minus p50 in-image (the server's own) and minus p50 in-process. Every answer is checked against the in-process one. Needs a Docker engine
and amlocal's Chainer image (built on first use).
"""

import argparse
import concurrent.futures
import gc
import gzip
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TRAINER_DIR = REPO / "trainer"
MNIST_DIR = REPO / "tests" / "data" / "mnist-10k"
BATCHES = (1, 100)


def train_model(folder):
    """model.npz of the trainer after 1 epoch, written under folder/outputs."""
    subprocess.run([sys.executable, str(TRAINER_DIR / "chainer_mnist.py"), "--epochs", "1",
                    "--data-dir", str(MNIST_DIR), "--output_dir", str(folder / "outputs")],
                   check=True, capture_output=True, timeout=600)
    return folder / "outputs" / "model.npz"


def test_payloads():
    """{batch size: the JSON request of that many MNIST test digits}."""
    with gzip.open(MNIST_DIR / "t10k-images-idx3-ubyte.gz") as images_file:
        images = np.frombuffer(images_file.read(), np.uint8, offset=16).reshape(-1, 784) / 255
    return {size: json.dumps({"data": images[:size].round(4).tolist()}) for size in BATCHES}


def in_process_scorer(model_dir):
    """score.py's run(), after its init() with AZUREML_MODEL_DIR as a service would set it."""
    os.environ["AZUREML_MODEL_DIR"] = str(model_dir)
    spec = importlib.util.spec_from_file_location("score", TRAINER_DIR / "score.py")
    score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score)
    score.init()
    return lambda payload: score.run(payload)


def http_scorer(service, key):
    """A call of the service's /score, one keep-alive session per thread."""
    import requests

    local = threading.local()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"

    def call(payload):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        response = local.session.post(service.scoring_uri, data=payload, headers=headers,
                                      timeout=60)
        response.raise_for_status()
        return response.json()
    return call


def measure(score, payload, expected, calls, clients):
    """(latencies in s, wall seconds) of `calls` calls spread over `clients` threads."""
    def one(_):
        started = time.perf_counter()
        answer = score(payload)
        latency = time.perf_counter() - started
        if answer != expected:
            raise SystemExit(f"a call answered {str(answer)[:200]}, not {str(expected)[:200]}")
        return latency

    for _ in range(min(calls, 10)):  # warm up: connections, caches
        one(None)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, range(calls)))
    return latencies, time.perf_counter() - started


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def deploy(model_path, auth):
    from amlocal.core.model import InferenceConfig, Model
    from amlocal.core.webservice import AciWebservice, LocalWebservice
    from amlocal.core.workspace import Workspace

    ws = Workspace.from_config()
    os.chdir(model_path.parent.parent)  # Model.register wants the model under the current folder
    model = Model.register(ws, model_path=str(model_path.relative_to(Path.cwd())),
                           model_name="mnist")
    config = (AciWebservice.deploy_configuration(cpu_cores=1, memory_gb=1, auth_enabled=True)
              if auth else LocalWebservice.deploy_configuration())
    started = time.perf_counter()
    service = Model.deploy(ws, "scoring-bench", [model],
                           InferenceConfig(entry_script="score.py",
                                           source_directory=str(TRAINER_DIR)), config)
    service.wait_for_deployment()
    print(f"deployed {service.compute_type} service in {time.perf_counter() - started:.1f} s "
          f"(image {service.image_id}): {service.scoring_uri}")
    return service


def measure_all(ways, payloads, expected, args):
    """{(images per call, clients): {way: (latencies, wall seconds)}}, the ways taking turns."""
    results = {}
    for size, payload in payloads.items():
        for clients in (1, args.clients):
            taken = results[size, clients] = {way: ([], 0.0) for way in ways}
            for _ in range(args.rounds):  # in turns: the machine's noise falls on every way
                for way, score in ways.items():
                    latencies, wall = measure(score, payload, expected[size],
                                              args.requests // args.rounds, clients)
                    taken[way] = (taken[way][0] + latencies, taken[way][1] + wall)
    return results


def in_image(image, model_dir, args):
    """measure_all's figures for run() called in-process in the service's own image (its Python
    and NumPy, no server): the repository and the model mounted read-only where they are here."""
    from amlocal.backends.local import engine

    command = ["python", str(Path(__file__).resolve()), "--in-image-of", str(model_dir),
               "--requests", str(args.requests), "--clients", str(args.clients),
               "--rounds", str(args.rounds)]
    mounts = {str(REPO): {"bind": str(REPO), "mode": "ro"},
              str(model_dir): {"bind": str(model_dir), "mode": "ro"}}
    output = engine.connect().containers.run(image, command, volumes=mounts, network_mode="none",
                                             remove=True, stdout=True, stderr=False)
    return {tuple(map(int, key.split("/"))): {way: tuple(taken) for way, taken in ways.items()}
            for key, ways in json.loads(output.decode().splitlines()[-1]).items()}


def print_results(results, requests_per_row):
    print(f"{requests_per_row} calls per row; latency per call in ms; "
          f"{os.cpu_count()} CPUs on this host")
    print(f"{'images/call':>11} {'clients':>7} {'way':>10} {'p50':>8} {'p99':>8} "
          f"{'calls/s':>9} {'images/s':>10}")
    for (size, clients), ways in results.items():
        p50s = {}
        for way, (latencies, wall) in ways.items():
            p50s[way] = percentile(latencies, 0.5)
            print(f"{size:>11} {clients:>7} {way:>10} {p50s[way] * 1e3:>8.2f} "
                  f"{percentile(latencies, 0.99) * 1e3:>8.2f} {len(latencies) / wall:>9.0f} "
                  f"{len(latencies) * size / wall:>10.0f}")
        print(f"{'':>30} service p50 minus in-image {(p50s['service'] - p50s['in-image']) * 1e3:.2f}"
              f" ms, minus in-process {(p50s['service'] - p50s['in-process']) * 1e3:.2f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="calls per measurement")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=4,
                        help="turns the ways take, each with requests/rounds calls")
    parser.add_argument("--auth", action="store_true",
                        help="an ACI-style service with auth_enabled (each call sends its key)")
    parser.add_argument("--model", type=Path, help="a model.npz to serve (default: train one)")
    parser.add_argument("--in-image-of", type=Path, help=argparse.SUPPRESS)  # in_image's side
    args = parser.parse_args()

    payloads = test_payloads()
    if args.in_image_of:
        score = in_process_scorer(args.in_image_of)
        gc.freeze()
        results = measure_all({"in-image": score}, payloads,
                              {size: score(payload) for size, payload in payloads.items()}, args)
        print(json.dumps({f"{size}/{clients}": ways for (size, clients), ways in results.items()}))
        return

    from throwaway import throwaway_source

    workdir = throwaway_source("", prefix="amlocal-scoring-bench-").parent
    if args.model:
        model_path = workdir / "outputs" / "model.npz"
        model_path.parent.mkdir()
        model_path.write_bytes(args.model.read_bytes())
    else:
        model_path = train_model(workdir)
    in_process = in_process_scorer(model_path.parent)
    expected = {size: in_process(payload) for size, payload in payloads.items()}
    service = deploy(model_path, args.auth)
    try:
        over_http = http_scorer(service, service.get_keys()[0] if args.auth else None)
        # What this process has loaded (amlocal, Docker's client, Chainer) would otherwise be
        # walked by the garbage collector at every large json.loads in run(): the scoring server
        # has none of it, and the in-process figures should not pay for it either.
        gc.freeze()
        results = measure_all({"in-process": in_process, "service": over_http}, payloads,
                              expected, args)
        for key, ways in in_image(service.image_id, model_path.parent, args).items():
            results[key] = {"in-process": results[key]["in-process"], **ways,
                            "service": results[key]["service"]}
    finally:
        service.delete()
    print_results(results, args.requests)


if __name__ == "__main__":
    main()
