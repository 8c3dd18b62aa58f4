"""How fast does the web UI answer for a long metric and a big history? Measured side by side.

    .venv/bin/python benchmarks/ui.py [--values 100000] [--runs 10000] [--repeat 5]

In a throwaway AMLOCAL_HOME it records, through the history's RunStore (one transaction each):
one run with --values values of one scalar metric, and --runs more runs. It starts the real
`amlocal ui --port 0` and times, over HTTP, the median of --repeat rounds of:

  - the long run: its page (/runs/ID) and then its chart data (/api/runs/ID/series), with the
    bytes sent (target: under 1 s for both); beside it, once, `amlocal runs report` of the same
    run (the static report, which embeds every value);
  - the runs table with --runs + 1 runs in the history: its first page (/), a page sorted by
    duration, and its last page (target: under 0.5 s);
  - where Playwright and Chromium are found, the long run's page in a headless browser until
    its chart is drawn.
"""

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

AMLOCAL = [sys.executable, "-m", "amlocal"]
CHROMIUM = os.environ.get("AMLOCAL_CHROMIUM", "/usr/bin/chromium")


def fill_history(home, values, runs):
    """(the long run's id, seconds taken): the history filled through RunStore."""
    from amlocal.backends.history.metric_batches import add_metric_batch
    from amlocal.backends.history.store import RunStore

    started = time.perf_counter()
    store = RunStore(home)
    spec = {"script": "train.py", "arguments": [], "node_count": 1}
    long_run = store.create_run(experiment="long-metric", executor="process", compute="local",
                                spec=spec, fill_snapshot=lambda folder: folder.mkdir())
    now = time.time()
    add_metric_batch(store, long_run, {"loss": [
        ("scalar", math.exp(-index / 20_000) + 0.05 * math.sin(index / 50), index, now + index * 1e-6)
        for index in range(values)]}, max_names=10)
    with store.transaction() as conn:
        for index in range(runs):
            run_id = f"bulk_{index:06d}"
            store.run_dir(run_id).mkdir()
            store.insert_run_in(conn, run_id=run_id, experiment=f"experiment-{index % 20}",
                                executor="process", compute="local", spec=spec,
                                tags={"fold": str(index % 5)}, backend="local", driver_pid=None)
    return long_run, time.perf_counter() - started


def fetch(url):
    """(seconds, bytes) of one GET, the body read whole."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        body = response.read()
    return time.perf_counter() - started, len(body)


def median_of(repeat, measure):
    rounds = [measure() for _ in range(repeat)]
    return statistics.median(seconds for seconds, _size in rounds), rounds[-1][1]


def browser_open(url, repeat):
    """Median seconds from navigation to the chart's canvas in headless Chromium, or None."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path(CHROMIUM).exists():
        return None
    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        for _ in range(repeat):
            started = time.perf_counter()
            page.goto(url)
            page.locator("[data-series] canvas").first.wait_for()
            times.append(time.perf_counter() - started)
        browser.close()
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="amlocal-ui-bench-"))
    os.environ["AMLOCAL_HOME"] = str(home)
    long_run, filled = fill_history(home, args.values, args.runs)
    print(f"history: 1 run with {args.values:,} values of one metric and {args.runs:,} more runs, "
          f"recorded through RunStore in {filled:.1f} s ({home})")

    server = subprocess.Popen([*AMLOCAL, "ui", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        fetch(url + "/")  # the first request pays for template compilation: not timed
        page = median_of(args.repeat, lambda: fetch(f"{url}/runs/{long_run}"))
        chart = median_of(args.repeat, lambda: fetch(f"{url}/api/runs/{long_run}/series?name=loss"))
        table = median_of(args.repeat, lambda: fetch(url + "/"))
        by_duration = median_of(args.repeat, lambda: fetch(url + "/?sort=duration&order=desc"))
        last_page = math.ceil((args.runs + 1) / 50)
        last = median_of(args.repeat, lambda: fetch(f"{url}/?page={last_page}"))
        in_browser = browser_open(f"{url}/runs/{long_run}", args.repeat)
    finally:
        server.terminate()
        server.wait(timeout=30)

    started = time.perf_counter()
    report = subprocess.run([*AMLOCAL, "runs", "report", long_run, "-o", str(home / "report")],
                            capture_output=True, text=True)
    report_s = time.perf_counter() - started
    report_file = home / "report" / "index.html"
    report_bytes = report_file.stat().st_size if report.returncode == 0 and report_file.exists() else None

    print(f"median of {args.repeat} rounds, over HTTP from the same machine")
    print(f"{'what':<58} {'seconds':>8} {'bytes':>11}  target")
    rows = [
        (f"long run: its page /runs/ID", *page, ""),
        (f"long run: its chart data ({args.values:,} values downsampled)", *chart, ""),
        ("long run: page + chart data", page[0] + chart[0], page[1] + chart[1], "< 1 s"),
        (f"runs table, first page ({args.runs + 1:,} runs)", *table, "< 0.5 s"),
        ("runs table, sorted by duration", *by_duration, "< 0.5 s"),
        (f"runs table, last page (page {last_page})", *last, "< 0.5 s"),
    ]
    if in_browser is not None:
        rows.append(("long run in headless Chromium, until its chart is drawn", in_browser, None,
                     "< 1 s"))
    rows.append(("today's static report (`amlocal runs report`), once", report_s, report_bytes,
                 "(for comparison)"))
    for what, seconds, size, target in rows:
        shown = f"{size:,}" if size is not None else "-"
        print(f"{what:<58} {seconds:>8.3f} {shown:>11}  {target}")


if __name__ == "__main__":
    main()
