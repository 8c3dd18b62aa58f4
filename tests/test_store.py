"""Tests for the local run history (backends/history/store.py), on real SQLite files in tmp_path."""

import json
import re
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from amlocal.backends import status as run_status
from amlocal.backends.base import STAGES
from amlocal.backends.history.store import TELEMETRY_FILE, RunStore
from amlocal.backends.local.telemetry import ingest as ingest_telemetry
from amlocal.errors import IllegalTransitionError, RunNotFoundError, UserInputError

HAPPY_PATH = ("Preparing", "Queued", "Running", "Finalizing", "Completed")
SPEC = {"script": "train.py", "arguments": ["--epochs", "2"], "tags": {"team": "vision"}}


@pytest.fixture
def store(amlocal_home):
    return RunStore()  # found through AMLOCAL_HOME, as every command finds it


def write_snapshot(folder):
    folder.mkdir()
    (folder / "train.py").write_text("print('training')\n")


def new_run(store, experiment="mnist", spec=SPEC):
    return store.create_run(experiment=experiment, executor="process", compute="local", spec=spec,
                            fill_snapshot=write_snapshot)


def advance(store, run_id, *statuses):
    for new_status in statuses:
        store.set_status(run_id, new_status)


def metric(name, value, metric_type="scalar", **extra):
    return {"kind": "metric", "name": name, "type": metric_type, "value": value, "t": 1.0, **extra}


def append_telemetry(store, run_id, *events, raw=b""):
    """Append events as the run-side API writes them (one JSON object a line), then raw bytes."""
    path = store.run_dir(run_id) / "telemetry" / TELEMETRY_FILE
    with open(path, "ab") as handle:
        handle.write(b"".join(json.dumps(event).encode() + b"\n" for event in events) + raw)


def run_python(code, *args):
    """Run `code` in a separate Python process; return its stdout."""
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- creating runs ---------------------------------------------------------------------------

def test_create_run_makes_the_folder_layout_and_a_not_started_record(store, amlocal_home):
    before = time.time()
    run_id = new_run(store)

    assert re.fullmatch(r"mnist_\d{10}_[0-9a-f]{8}", run_id)
    run_dir = amlocal_home / "runs" / run_id
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "azureml-logs", "logs", "outputs", "snapshot", "telemetry", "uploads"]
    assert (run_dir / "snapshot" / "train.py").read_text() == "print('training')\n"
    assert sorted(p.name for p in (amlocal_home / "runs").iterdir()) == [run_id]

    record = store.get_run(run_id)
    assert before <= record.pop("created_at") <= time.time()
    assert record == {
        "id": run_id, "number": 1, "experiment": "mnist", "status": "NotStarted",
        "backend": "local", "executor": "process", "compute": "local", "spec": SPEC,
        "image": None, "exit_code": None, "error": None, "started_at": None, "ended_at": None,
        "driver_pid": None, "container_id": None, "script_pid": None, "nodes": [], "preemptions": 0, "telemetry_offset": 0,
        "parent_id": None, "display_name": None,
        "tags": {"team": "vision"}, "properties": {},
        "stages": [{"name": name, "status": "NotStarted", "started_at": None, "ended_at": None,
                    "duration_s": None, "detail": ""} for name in STAGES],
    }
    assert [status for status, _at in store.status_history(run_id)] == ["NotStarted"]


def test_run_numbers_count_per_experiment(store):
    first, second = new_run(store), new_run(store)
    other = new_run(store, experiment="cifar")

    assert [store.get_run(r)["number"] for r in (first, second, other)] == [1, 2, 1]
    assert [r["id"] for r in store.list_runs(experiment="mnist")] == [second, first]


def assert_nothing_created(store, amlocal_home):
    assert list((amlocal_home / "runs").iterdir()) == []
    assert store.list_runs() == []


def test_a_failing_snapshot_leaves_neither_folder_nor_record(store, amlocal_home):
    def fill_snapshot(folder):
        write_snapshot(folder)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.create_run(experiment="mnist", executor="process", compute="local", spec=SPEC,
                         fill_snapshot=fill_snapshot)

    assert_nothing_created(store, amlocal_home)


def test_a_failing_record_insert_leaves_no_folder_behind(store, amlocal_home):
    with pytest.raises(TypeError):  # the spec cannot be stored as JSON
        new_run(store, spec={"script": "train.py", "bad": object()})

    assert_nothing_created(store, amlocal_home)


def test_an_unknown_run_raises_run_not_found(store):
    for read in (store.get_run, store.get_status, store.get_metrics, store.file_names):
        with pytest.raises(RunNotFoundError, match="no run with id 'mnist_1_deadbeef'"):
            read("mnist_1_deadbeef")
    with pytest.raises(RunNotFoundError):
        store.set_status("mnist_1_deadbeef", "Preparing")


# -- status changes --------------------------------------------------------------------------

def test_set_status_follows_the_happy_path_and_stamps_start_and_end(store):
    run_id = new_run(store)

    previous = []
    for new_status in HAPPY_PATH:
        before = time.time()
        previous.append(store.set_status(run_id, new_status))
        record = store.get_run(run_id)
        assert record["status"] == new_status
        if new_status == "Running":
            assert before <= record["started_at"] <= time.time()
        if new_status != "Completed":
            assert record["ended_at"] is None

    record = store.get_run(run_id)
    assert record["started_at"] <= record["ended_at"] <= time.time()
    assert previous == ["NotStarted", *HAPPY_PATH[:-1]]
    history = store.status_history(run_id)
    assert [status for status, _at in history] == ["NotStarted", *HAPPY_PATH]
    assert [at for _status, at in history] == sorted(at for _status, at in history)


def test_set_status_writes_the_given_fields_with_the_status(store):
    run_id = new_run(store)
    advance(store, run_id, *HAPPY_PATH[:-1])

    store.set_status(run_id, "Completed", exit_code=0)

    assert store.get_run(run_id)["exit_code"] == 0
    with pytest.raises(ValueError, match="not updatable: \\['status'\\]"):
        store.set_status(run_id, "Failed", status="Failed")


def test_coming_back_from_not_responding_keeps_the_first_start_time(store):
    run_id = new_run(store)
    advance(store, run_id, "Preparing", "Queued", "Running")
    started_at = store.get_run(run_id)["started_at"]

    advance(store, run_id, "NotResponding", "Running")

    assert store.get_run(run_id)["started_at"] == started_at


@pytest.mark.parametrize("path, illegal", [
    ((), "Running"),
    (("Preparing", "Queued"), "Completed"),
    (("Preparing", "Queued", "Running"), "Canceled"),
    (HAPPY_PATH, "Running"),
])
def test_an_illegal_status_change_raises_and_changes_nothing(store, path, illegal):
    run_id = new_run(store)
    advance(store, run_id, *path)
    before, history = store.get_run(run_id), store.status_history(run_id)

    with pytest.raises(IllegalTransitionError):
        store.set_status(run_id, illegal)

    assert store.get_run(run_id) == before
    assert store.status_history(run_id) == history
    assert store.try_set_status(run_id, illegal) is False


def test_a_status_change_that_lost_a_race_raises(store, amlocal_home):
    run_id = new_run(store)
    advance(store, run_id, "Preparing", "Queued")
    driver, canceler = RunStore(amlocal_home), RunStore(amlocal_home)

    canceler.set_status(run_id, "CancelRequested")  # the user cancels while the driver looks away
    with pytest.raises(IllegalTransitionError, match="from CancelRequested to Running"):
        driver.set_status(run_id, "Running")

    assert store.get_status(run_id) == "CancelRequested"


def test_of_racing_terminal_changes_exactly_one_wins(store, amlocal_home):
    run_id = new_run(store)
    advance(store, run_id, *HAPPY_PATH[:-1])
    racers = 8
    barrier = threading.Barrier(racers)
    outcomes = []

    def finish(new_status):
        racer_store = RunStore(amlocal_home)
        barrier.wait()
        try:
            racer_store.set_status(run_id, new_status)
            outcomes.append(new_status)
        except IllegalTransitionError:
            outcomes.append("lost")

    threads = [threading.Thread(target=finish, args=("Completed" if i % 2 else "Failed",))
               for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [outcome for outcome in outcomes if outcome != "lost"]
    assert len(outcomes) == racers and len(winners) == 1
    assert store.get_status(run_id) == winners[0]
    assert [s for s, _at in store.status_history(run_id)][-2:] == ["Finalizing", winners[0]]


# -- telemetry -------------------------------------------------------------------------------

def test_ingest_telemetry_reads_metrics_tags_properties_and_fail(store):
    run_id = new_run(store)
    append_telemetry(
        store, run_id,
        metric("accuracy", 0.5, step=1, description="validation accuracy"),
        metric("accuracy", 0.75, step=2),
        metric("curve", [1, 2, 3], "list"),
        metric("table", {"epoch": [1, 2], "loss": [0.9, 0.4]}, "table"),
        {"kind": "tags", "tags": {"stage": "dev"}, "t": 1.0},
        {"kind": "properties", "properties": {"git": "abc123"}, "t": 1.0},
        {"kind": "fail", "error": "bad data", "error_code": None, "t": 1.0},
        {"kind": "fail", "error": "second call", "error_code": None, "t": 1.0},
    )

    assert ingest_telemetry(store, run_id) == 4

    assert store.get_metrics(run_id) == {
        "accuracy": [0.5, 0.75],
        "curve": [[1, 2, 3]],
        "table": [{"epoch": [1, 2], "loss": [0.9, 0.4]}],
    }
    record = store.get_run(run_id)
    assert record["tags"] == {"team": "vision", "stage": "dev"}
    assert record["properties"] == {"git": "abc123"}
    assert record["error"] == "Run.fail() called by the script: bad data"


def test_ingest_telemetry_without_a_telemetry_file_reads_nothing(store):
    run_id = new_run(store)

    assert ingest_telemetry(store, run_id) == 0
    assert store.get_metrics(run_id) == {}


def test_ingest_telemetry_is_idempotent_and_picks_up_where_it_stopped(store):
    run_id = new_run(store)
    append_telemetry(store, run_id, metric("loss", 3), metric("loss", 2))
    assert ingest_telemetry(store, run_id) == 2

    assert ingest_telemetry(store, run_id) == 0
    assert store.get_metrics(run_id) == {"loss": [3, 2]}

    append_telemetry(store, run_id, metric("loss", 1))
    assert ingest_telemetry(store, run_id) == 1
    assert store.get_metrics(run_id) == {"loss": [3, 2, 1]}


def test_a_torn_last_line_is_ingested_once_it_is_completed(store):
    run_id = new_run(store)
    line = json.dumps(metric("loss", 2)).encode()
    append_telemetry(store, run_id, metric("loss", 3), raw=line[:10])

    assert ingest_telemetry(store, run_id) == 1
    assert store.get_metrics(run_id) == {"loss": [3]}

    append_telemetry(store, run_id, raw=line[10:] + b"\n")
    assert ingest_telemetry(store, run_id) == 1
    assert store.get_metrics(run_id) == {"loss": [3, 2]}


def test_a_malformed_line_is_skipped_and_the_rest_is_read(store):
    run_id = new_run(store)
    append_telemetry(store, run_id, metric("loss", 3),
                     raw=b'{"kind": "metric", "na\n' + b"\xff\xfe not json\n")
    append_telemetry(store, run_id, metric("loss", 2))

    assert ingest_telemetry(store, run_id) == 2
    assert store.get_metrics(run_id) == {"loss": [3, 2]}
    assert ingest_telemetry(store, run_id) == 0


def test_a_json_line_that_is_not_a_valid_event_is_skipped(store):
    run_id = new_run(store)
    append_telemetry(store, run_id, {"kind": "metric", "value": 1}, metric("loss", 2))

    assert ingest_telemetry(store, run_id) == 1
    assert store.get_metrics(run_id) == {"loss": [2]}


def test_get_metrics_orders_names_and_keeps_each_metrics_logging_order(store):
    run_id = new_run(store)
    append_telemetry(store, run_id, metric("loss", 0.9), metric("acc", 0.1), metric("loss", 0.5))
    ingest_telemetry(store, run_id)
    append_telemetry(store, run_id, metric("acc", 0.4), metric("loss", 0.7))
    ingest_telemetry(store, run_id)

    metrics = store.get_metrics(run_id)

    assert list(metrics) == ["acc", "loss"]
    assert metrics == {"acc": [0.1, 0.4], "loss": [0.9, 0.5, 0.7]}


# -- files -----------------------------------------------------------------------------------

@pytest.fixture
def run_with_files(store):
    run_id = new_run(store)
    run_dir = store.run_dir(run_id)
    for relative in ("outputs/model.pkl", "outputs/plots/loss.png", "logs/train.log",
                     "azureml-logs/70_driver_log.txt", "telemetry/events.jsonl", "wd/scratch.txt"):
        (run_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / relative).write_text(relative)
    return run_id


def test_file_names_lists_only_outputs_logs_and_azureml_logs(store, run_with_files):
    assert store.file_names(run_with_files) == [
        "azureml-logs/70_driver_log.txt", "logs/train.log", "outputs/model.pkl",
        "outputs/plots/loss.png"]


def test_file_names_never_list_links_which_stay_in_the_folder_as_links(store, run_with_files):
    outputs = store.run_dir(run_with_files) / "outputs"
    (outputs / "escapes.txt").symlink_to("/etc/hostname")
    (outputs / "dangling.txt").symlink_to("/amlocal/wd/outputs/in-container-only.txt")
    (outputs / "alias.pkl").symlink_to(outputs / "model.pkl")

    names = store.file_names(run_with_files)

    assert not {"outputs/alias.pkl", "outputs/escapes.txt", "outputs/dangling.txt"} & set(names)
    assert all(store.file_path(run_with_files, name) for name in names)
    assert (outputs / "alias.pkl").is_symlink()


def test_file_path_gives_the_host_path_of_a_run_file(store, run_with_files):
    for name in store.file_names(run_with_files):
        path = store.file_path(run_with_files, name)
        assert path == (store.run_dir(run_with_files) / name).resolve()
        assert path.read_text() == name


@pytest.mark.parametrize("name", [
    "snapshot/train.py",
    "telemetry/events.jsonl",
    "wd/scratch.txt",
    "outputs/../snapshot/train.py",
    "../../amlocal.db",
    "outputs/../../../amlocal.db",
    "/etc/passwd",
    "outputs/missing.txt",
    "outputs",
    "outputs/linked-out.py",  # a link the script made to a file outside its outputs
])
def test_file_path_rejects_anything_but_an_existing_run_file(store, run_with_files, name):
    outputs = store.run_dir(run_with_files) / "outputs"
    (outputs / "linked-out.py").symlink_to(store.run_dir(run_with_files) / "snapshot" / "train.py")

    with pytest.raises(UserInputError, match=f"run {run_with_files} has no file '{re.escape(name)}'"):
        store.file_path(run_with_files, name)


# -- several processes -----------------------------------------------------------------------

READ_BACK = """
import json, sys
from amlocal.backends.history.store import RunStore
store = RunStore(sys.argv[1])
record = store.get_run(sys.argv[2])
print(json.dumps({"record": record, "metrics": store.get_metrics(sys.argv[2])}))
"""


def test_a_second_process_reads_back_what_this_one_wrote(store, amlocal_home):
    run_id = new_run(store)
    advance(store, run_id, "Preparing", "Queued", "Running")
    store.start_stage(run_id, "Running", detail="python train.py")
    append_telemetry(store, run_id, metric("loss", 0.5), metric("loss", 0.25),
                     metric("curve", [1.5, 2.5], "list"))
    ingest_telemetry(store, run_id)

    seen = json.loads(run_python(READ_BACK, amlocal_home, run_id))

    assert seen == {"record": store.get_run(run_id),
                    "metrics": {"curve": [[1.5, 2.5]], "loss": [0.5, 0.25]}}
    assert seen["record"]["status"] == "Running"
    assert seen["record"]["stages"][2]["status"] == "Running"
    assert seen["record"]["stages"][2]["detail"] == "python train.py"


CREATE_AND_LOG = """
import json, os, sys, time
from amlocal.backends.history.store import RunStore, TELEMETRY_FILE
from amlocal.backends.local.telemetry import ingest as ingest_telemetry
home, worker, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
while not os.path.exists(go):
    time.sleep(0.005)
store = RunStore(home)
run_ids = []
for index in range(10):
    run_id = store.create_run(experiment="shared", executor="process", compute="local",
                              spec={"worker": worker, "index": index},
                              fill_snapshot=lambda folder: folder.mkdir())
    with open(store.run_dir(run_id) / "telemetry" / TELEMETRY_FILE, "w") as handle:
        for step in range(5):
            handle.write(json.dumps({"kind": "metric", "name": "loss", "type": "scalar",
                                     "value": [worker, index, step]}) + "\\n")
    ingest_telemetry(store, run_id)
    store.set_status(run_id, "Preparing")
    run_ids.append(run_id)
print(json.dumps(run_ids))
"""


def start_together(code, args_per_process, go_file):
    """Start one Python process per argument list; let them all go at once; return their stdout."""
    processes = [subprocess.Popen([sys.executable, "-c", code, *map(str, args), str(go_file)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for args in args_per_process]
    time.sleep(0.5)  # let every interpreter start and wait at the line
    go_file.touch()
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        assert stderr == ""
        outputs.append(stdout)
    return outputs


def test_four_processes_creating_and_logging_runs_at_once(tmp_path):
    home = tmp_path / "home"

    outputs = start_together(CREATE_AND_LOG, [(home, worker) for worker in range(4)],
                             tmp_path / "go")

    run_ids = [run_id for stdout in outputs for run_id in json.loads(stdout)]
    store = RunStore(home)
    records = store.list_runs(experiment="shared")
    assert len(set(run_ids)) == 40
    assert sorted(record["id"] for record in records) == sorted(run_ids)
    assert sorted(record["number"] for record in records) == list(range(1, 41))
    for record in records:
        worker, index = record["spec"]["worker"], record["spec"]["index"]
        assert record["status"] == "Preparing"
        assert store.get_metrics(record["id"]) == {
            "loss": [[worker, index, step] for step in range(5)]}


def test_opening_a_new_history_waits_while_another_process_holds_its_write_lock(tmp_path):
    # What a concurrent RunStore holds for a moment while it switches the new file to WAL.
    home = tmp_path / "home"
    home.mkdir()
    other = sqlite3.connect(home / "amlocal.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    opened = []

    def open_store():
        try:
            opened.append(RunStore(home))
        except Exception as error:
            opened.append(error)

    opener = threading.Thread(target=open_store)
    opener.start()
    time.sleep(0.5)
    other.execute("COMMIT")
    other.close()
    opener.join()

    if isinstance(opened[0], Exception):
        raise opened[0]
    assert opened[0].list_runs() == []


INGEST = """
import json, os, sys, time
from amlocal.backends.history.store import RunStore
from amlocal.backends.local.telemetry import ingest as ingest_telemetry
home, run_id, go = sys.argv[1], sys.argv[2], sys.argv[3]
while not os.path.exists(go):
    time.sleep(0.005)
store = RunStore(home)
print(sum(ingest_telemetry(store, run_id) for _ in range(20)))
"""


def test_processes_ingesting_the_same_run_at_once_neither_lose_nor_repeat(store, amlocal_home,
                                                                        tmp_path):
    run_id = new_run(store)
    append_telemetry(store, run_id, *(metric("loss", step) for step in range(300)))

    outputs = start_together(INGEST, [(amlocal_home, run_id)] * 4, tmp_path / "go")

    assert sum(int(stdout) for stdout in outputs) == 300
    assert store.get_metrics(run_id) == {"loss": list(range(300))}


def test_a_history_written_by_an_older_amlocal_is_upgraded_in_place(tmp_path):
    from amlocal.backends.history import schema

    home = tmp_path / "old-home"
    (home / "runs" / "exp_1_00000000").mkdir(parents=True)
    with sqlite3.connect(home / "amlocal.db") as conn:  # what the first release wrote
        conn.executescript(schema.MIGRATIONS[0] + "PRAGMA user_version = 1;")
        conn.execute("INSERT INTO runs (id, number, experiment, status, backend, executor, "
                     "compute, spec, created_at) VALUES ('exp_1_00000000', 1, 'exp', "
                     "'Completed', 'local', 'process', 'local', '{\"script\": \"t.py\"}', 1.0)")
        conn.executemany("INSERT INTO stages (run_id, name, position, status) VALUES (?, ?, ?, ?)",
                         [("exp_1_00000000", name, i, "Completed") for i, name in
                          enumerate(("Preparing", "Scaling", "Running", "PostProcessing"))])

    store = RunStore(home)

    record = store.get_run("exp_1_00000000")
    assert record["status"] == "Completed" and record["nodes"] == [] and record["preemptions"] == 0
    with sqlite3.connect(home / "amlocal.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
        assert conn.execute("SELECT COUNT(*) FROM queue").fetchone()[0] == 0


# -- stages and child runs through the state machines (issue 11, item 4) ----------------------

def test_a_stage_that_ended_cannot_end_again_or_go_back_to_running(store):
    run_id = new_run(store)
    store.start_stage(run_id, "Preparing")
    store.finish_stage(run_id, "Preparing", "Completed")

    with pytest.raises(IllegalTransitionError, match="from Completed to Failed"):
        store.finish_stage(run_id, "Preparing", "Failed")
    with pytest.raises(IllegalTransitionError, match="from Completed to Running"):
        store.start_stage(run_id, "Preparing")
    assert store.get_run(run_id)["stages"][0]["status"] == "Completed"


def test_a_requeued_run_may_run_its_scaling_stage_again(store):
    run_id = new_run(store)
    store.start_stage(run_id, "Scaling")
    store.finish_stage(run_id, "Scaling", "Completed")

    store.start_stage(run_id, "Scaling", requeued=True)

    scaling = store.get_run(run_id)["stages"][1]
    assert (scaling["status"], scaling["ended_at"]) == ("Running", None)


def test_a_child_run_the_script_starts_moves_only_through_legal_transitions(store):
    run_id = new_run(store)
    advance(store, run_id, "Preparing", "Queued", "Running")
    store.start_stage(run_id, "Running")
    child_id = run_id + "_child"
    append_telemetry(store, run_id, {"kind": "child", "name": "fold-1", "run": child_id},
                     {"kind": "status", "status": "Completed", "run": child_id})

    ingest_telemetry(store, run_id)

    history = [status for status, _at in store.status_history(child_id)]
    assert history == ["NotStarted", "Preparing", "Queued", "Running", "Finalizing", "Completed"]
    for current, new in zip(history, history[1:]):
        run_status.check_transition(current, new)
    child = store.get_run(child_id)
    assert child["parent_id"] == run_id and child["display_name"] == "fold-1"
    assert child["tags"] == {} and child["started_at"] is not None
    assert [(stage["name"], stage["status"]) for stage in child["stages"]] == [
        ("Preparing", "NotStarted"), ("Scaling", "NotStarted"), ("Running", "Completed"),
        ("PostProcessing", "NotStarted")]
