"""System metrics: a run's driver samples its script's CPU and memory use into the run's metrics
(`system/...`, MLflow's names) every AMLOCAL_SYSTEM_METRICS_S seconds until the script ends, on
both executors, from real processes and a real container."""

import time

import pytest

from amlocal.backends.local import system_metrics
from conftest import write_script
from test_cli import invoke, last_json, run_json

# Busy for about 2.5 s with about 80 MB written (so resident), then done.
BUSY = """\
import time
held = b"x" * (80 * 1000 * 1000)
end = time.time() + 2.5
while time.time() < end:
    sum(range(20000))
print("done", len(held))
"""
CPU = "system/cpu_utilization_percentage"
MEMORY = "system/system_memory_usage_megabytes"


def busy_run(tmp_path, executor):
    source = write_script(tmp_path / "src", "train.py", BUSY)
    result, record = run_json(source, "--script", "train.py", "--executor", executor, [])
    assert result.exit_code == 0, result.output
    assert record["status"] == "Completed"
    return record


def check_sampled(record):
    metrics = last_json(invoke("runs", "metrics", record["id"], "--json"))
    assert len(metrics[CPU]) >= 1 and len(metrics[MEMORY]) == len(metrics[CPU]), metrics
    assert all(0 <= value <= 100 for value in metrics[CPU]) and max(metrics[CPU]) > 0
    # The 80 MB it holds, and not much more than the interpreter besides.
    assert 80 <= max(metrics[MEMORY]) < 1000, metrics[MEMORY]
    # Stopped with the run: nothing more is sampled once it has ended.
    time.sleep(1.2)
    assert last_json(invoke("runs", "metrics", record["id"], "--json")) == metrics
    text = invoke("runs", "metrics", record["id"]).output
    assert "System metrics (sampled by amlocal while the script ran):" in text
    assert f"  {CPU}: " in text
    return metrics


def test_a_process_run_has_its_cpu_and_memory_sampled(amlocal_home, tmp_path, monkeypatch):
    monkeypatch.setenv("AMLOCAL_SYSTEM_METRICS_S", "0.5")

    check_sampled(busy_run(tmp_path, "process"))


@pytest.mark.docker
@pytest.mark.parametrize("source", ["cgroup files", "engine stats"])
def test_a_docker_run_has_its_cpu_and_memory_sampled(amlocal_home, docker_client, tmp_path,
                                                     monkeypatch, source):
    monkeypatch.setenv("AMLOCAL_SYSTEM_METRICS_S", "0.5")
    if source == "engine stats":  # as where the engine is on another host: no cgroup files here
        monkeypatch.setattr(system_metrics, "_CGROUP_LAYOUTS", ())

    metrics = check_sampled(busy_run(tmp_path, "docker"))

    assert all(0 < value < 100 for value in metrics["system/system_memory_usage_percentage"])


def test_zero_turns_system_metrics_off(amlocal_home, tmp_path, monkeypatch):
    monkeypatch.setenv("AMLOCAL_SYSTEM_METRICS_S", "0")

    record = busy_run(tmp_path, "process")

    assert last_json(invoke("runs", "metrics", record["id"], "--json")) == {}


def test_a_bad_interval_is_refused_before_the_run_exists(amlocal_home, tmp_path, monkeypatch):
    monkeypatch.setenv("AMLOCAL_SYSTEM_METRICS_S", "often")
    source = write_script(tmp_path / "src", "train.py", "print('never')\n")

    result = invoke("run", source, "--script", "train.py", "--executor", "process")

    assert result.exit_code == 2
    assert "AMLOCAL_SYSTEM_METRICS_S must be a number between 0 and 3600" in result.output
    assert last_json(invoke("runs", "list", "--json")) == []


def test_system_metrics_do_not_count_against_a_runs_metric_names(amlocal_home):
    from amlocal.backends.history.metric_batches import TooManyMetricNames, add_metric_batch
    from amlocal.backends.history.store import RunStore

    store = RunStore(amlocal_home)
    run_id = store.create_run(experiment="limits", executor="process", compute="local",
                              spec={}, fill_snapshot=lambda folder: folder.mkdir())
    now = time.time()
    add_metric_batch(store, run_id, {name: [("scalar", 1.0, 0, now)] for name in (CPU, MEMORY)},
                     50)

    # Azure ML's 50 names of the script's own, as the metrics route allows them.
    add_metric_batch(store, run_id, {f"m{index}": [("scalar", 1.0, None, now)]
                                     for index in range(50)}, 50)
    with pytest.raises(TooManyMetricNames):
        add_metric_batch(store, run_id, {"one_more": [("scalar", 1.0, None, now)]}, 50)
    assert len(store.get_metrics(run_id)) == 52


@pytest.mark.docker
def test_a_distributed_run_is_sampled_over_all_its_nodes(amlocal_home, docker_client, tmp_path,
                                                          monkeypatch):
    """Two nodes each holding 80 MB: the run's memory is theirs together, against both nodes'
    limits together."""
    monkeypatch.setenv("AMLOCAL_SYSTEM_METRICS_S", "0.5")
    source = write_script(tmp_path / "src", "train.py", BUSY)
    invoke("compute", "create", "two-nodes", "--vm-size", "STANDARD_D1_V2", "--max-nodes", "2")

    result, record = run_json(source, "--script", "train.py", "--compute", "two-nodes",
                              "--node-count", "2", "--distribution", "pytorch", [])

    assert result.exit_code == 0 and record["status"] == "Completed", result.output
    metrics = last_json(invoke("runs", "metrics", record["id"], "--json"))
    assert 160 <= max(metrics[MEMORY]) < 2000, metrics[MEMORY]
    # STANDARD_D1_V2 nodes have 3.5 GiB each: 160 MB is about 2% of the two together, 4% of one.
    assert max(metrics["system/system_memory_usage_percentage"]) < 3.5, metrics
