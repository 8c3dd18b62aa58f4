"""The Run interface's contract (backends/base.py, backends/registries.py): every handle method
and every backend method, over every backend that can run here: the local backend with the
docker executor and with the process executor (real runs of a real script), the Azure backend
through its seam (tests/fake_azure.py: everything before the network is real), and the
in-memory test backend (tests/memory_backend.py).

Each backend is given the same run: a script that prints a line, logs `loss` twice and writes
outputs/model.bin. The local backend runs it; for the others the harness puts what the script
would have left where that backend reads it (Azure's run, the memory record). The tests then
ask each backend the same questions and expect the same answers.

Also here: each backend's handle implements every abstract method, and the abstract set covers
every method the code above backends/ calls on a handle or a backend (an ast scan of amlocal/
and cli/, each call's arguments bound to the declared signature).
"""

import ast
import inspect
import time
from pathlib import Path

import pytest

from amlocal.backends import status as run_status
from amlocal.backends.base import Backend, LogLine, NotAvailableError, RunHandle, StatusChanged
from amlocal.backends.registries import ComputeTargetRegistry, ModelRegistry
from amlocal.cli.report import write_report
from amlocal.errors import RunNotFoundError, UserInputError
from backend_harness import GREETING, MODEL_BYTES, make_harness
from conftest import REPO

@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker), "azure",
                        "memory"])
def harness(request, tmp_path, monkeypatch):
    if request.param == "azure":
        pytest.importorskip("azureml.core")
    client = request.getfixturevalue("docker_client") if request.param == "docker" else None
    return make_harness(request.param, tmp_path, monkeypatch, client)


# -- a finished run, read back -------------------------------------------------------------------

def test_a_finished_run_reports_its_status_details_and_history(harness):
    handle = harness.finished()

    assert isinstance(handle, RunHandle)
    assert handle.get_status() == run_status.COMPLETED
    details = handle.get_details()
    assert (details["id"], details["status"], details["experiment"]) == \
        (handle.id, run_status.COMPLETED, "contract")
    assert handle.get_detailed_status() == {"status": run_status.COMPLETED, "details": ""}
    history = handle.get_status_history()
    assert history[-1][0] == run_status.COMPLETED
    assert [at for _, at in history] == sorted(at for _, at in history)
    assert handle.wait(timeout=30)["status"] == run_status.COMPLETED  # an ended run: at once


def test_the_metrics_the_script_logged_are_read_back_in_order(harness):
    handle = harness.finished()

    assert handle.get_metrics()["loss"] == [0.5, 0.25]
    assert [(record["name"], record["value"]) for record in handle.get_metric_records()
            if record["name"] == "loss"] == [("loss", 0.5), ("loss", 0.25)]


def test_a_file_the_script_wrote_is_listed_opened_and_downloaded_with_its_bytes(harness, tmp_path):
    handle = harness.finished()

    assert "outputs/model.bin" in handle.get_file_names()
    size = handle.get_file_sizes()["outputs/model.bin"]
    assert size == (len(MODEL_BYTES) if harness.file_sizes_known else None)
    with handle.open_file("outputs/model.bin") as opened:
        assert opened.read() == MODEL_BYTES
    target = handle.download_file("outputs/model.bin", tmp_path / "one" / "m.bin")
    assert Path(target).read_bytes() == MODEL_BYTES
    written = handle.download_files(prefix="outputs", output_directory=tmp_path / "all",
                                    append_prefix=False)
    assert tmp_path / "all" / "model.bin" in [Path(path) for path in written]
    assert (tmp_path / "all" / "model.bin").read_bytes() == MODEL_BYTES


def test_the_scripts_output_is_in_its_log_its_tail_and_its_events(harness):
    handle = harness.finished()

    assert GREETING in list(handle.stream_logs())
    assert GREETING in handle.get_log_tail()["lines"]
    events = list(handle.follow())
    assert GREETING in [event.line for event in events if isinstance(event, LogLine)]
    assert events[-1] == StatusChanged(handle.id, run_status.COMPLETED)


def test_tags_are_set_read_back_and_removed_and_a_property_cannot_be_changed(harness):
    handle = harness.finished()

    handle.set_tags({"team": "vision", "stage": "dev"})
    assert {"team": "vision", "stage": "dev"}.items() <= handle.get_details()["tags"].items()
    handle.set_tags({}, remove=["stage"])
    assert "stage" not in handle.get_details()["tags"]
    handle.add_properties({"accuracy": "0.9"})
    handle.add_properties({"accuracy": "0.9"})
    with pytest.raises(UserInputError):
        handle.add_properties({"accuracy": "0.1"})
    assert handle.get_details()["properties"]["accuracy"] == "0.9"


def test_a_plain_run_has_no_children_and_is_not_a_sweep(harness):
    handle = harness.finished()

    assert handle.get_children() == []
    with pytest.raises(UserInputError, match="not a sweep"):
        handle.get_child_summaries()


def test_a_file_of_the_run_registered_as_a_model_has_its_bytes(harness, tmp_path):
    handle = harness.finished()

    record = handle.register_model("contract-model", "outputs/model.bin", tags={"a": "b"})

    assert (record["name"], record["version"]) == ("contract-model", 1)
    if harness.models_here:
        registry = harness.backend.models()
        assert registry.get("contract-model")["version"] == 1
        path = registry.download("contract-model", 1, tmp_path / "model")
        assert Path(path).read_bytes() == MODEL_BYTES
    else:
        assert harness.azure.models == [(handle.id, "contract-model", "outputs/model.bin")]


def test_the_report_shows_the_run_whatever_backend_ran_it(harness, tmp_path):
    handle = harness.finished()

    summary = write_report(handle, tmp_path / "report")

    page = Path(summary["file"]).read_text()
    assert summary["status"] == run_status.COMPLETED
    for shown in (GREETING, "outputs/model.bin", "loss", run_status.COMPLETED):
        assert shown in page
    if not handle.get_details()["stages"]:  # no empty timeline drawn: it says where they are
        assert "No stages recorded here" in page


# -- canceling ------------------------------------------------------------------------------------

def test_cancel_ends_a_running_run_canceled_with_the_reason(harness):
    handle = harness.running()

    handle.cancel(reason="stopped by the contract test")
    details = handle.wait(timeout=120)
    while not run_status.is_terminal(handle.get_status()):  # Azure's answer may lag one look
        time.sleep(0.1)

    assert handle.get_status() == run_status.CANCELED
    assert details["status"] in (run_status.CANCEL_REQUESTED, run_status.CANCELED)
    assert run_status.CANCEL_REQUESTED in [status for status, _ in handle.get_status_history()]
    handle.cancel(force=True)  # an ended run: nothing happens
    assert handle.get_status() == run_status.CANCELED


# -- the backend ----------------------------------------------------------------------------------

def test_the_backend_finds_lists_and_refuses_runs(harness):
    handle = harness.finished()
    backend = harness.backend

    assert isinstance(backend, Backend) and backend.home
    assert backend.get_run(handle.id).id == handle.id
    assert handle.id in [record["id"] for record in backend.list_runs(experiment="contract")]
    assert backend.list_runs(experiment="no-such-experiment") == []
    with pytest.raises(RunNotFoundError):
        backend.get_run("contract_no_such_run")


def test_what_a_backend_cannot_do_is_a_clear_error_and_what_it_can_works(harness):
    backend = harness.backend
    spec = harness.spec()

    if backend.name == "azure":
        assert backend.dry_run(spec)["dry_run"] is True
        with pytest.raises(NotAvailableError, match="not available on the azure backend"):
            backend.compute_targets()
    else:
        with pytest.raises(NotAvailableError, match="--backend azure"):
            backend.dry_run(spec)
    assert isinstance(backend.models(), ModelRegistry)
    if backend.name == "local":
        targets = backend.compute_targets()
        assert isinstance(targets, ComputeTargetRegistry) and targets.names()[0] == "local"
    if backend.name == "memory":
        with pytest.raises(NotAvailableError, match="sweep is not available on the memory"):
            backend.submit_sweep(spec, {})
        with pytest.raises(NotAvailableError, match="compute targets"):
            backend.compute_targets()


# -- the interface covers its callers -------------------------------------------------------------

def _calls_on(receiver_ends):
    """[(file:line, method, call)] for every call `<receiver>.method(...)` in amlocal/ and cli/
    whose receiver's source text ends with one of receiver_ends."""
    calls = []
    for path in sorted([*(REPO / "amlocal").rglob("*.py"), *(REPO / "cli").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and ast.unparse(node.func.value).endswith(receiver_ends)):
                calls.append((f"{path.relative_to(REPO)}:{node.lineno}", node.func.attr, node))
    return calls


def _bind(interface, where, method, call):
    declared = getattr(interface, method, None)
    assert callable(declared), f"{where}: {method} is not declared on {interface.__name__}"
    signature = inspect.signature(declared)
    positional = [None] * (len(call.args) + 1)  # self, then the call's positional arguments
    keywords = {keyword.arg: None for keyword in call.keywords if keyword.arg}
    try:
        signature.bind(*positional, **keywords)
    except TypeError as error:
        raise AssertionError(f"{where}: {interface.__name__}.{method}{signature} does not take "
                             f"this call: {error}") from None


def test_every_method_called_on_a_handle_above_the_backends_is_declared_in_base():
    calls = _calls_on(("handle", "_handle"))
    assert len(calls) > 20  # the scan sees the callers
    for where, method, call in calls:
        if method in ("read", "write", "fileno"):  # an open file, also called handle
            continue
        _bind(RunHandle, where, method, call)


def test_every_method_called_on_a_backend_above_the_backends_is_declared_in_base():
    calls = _calls_on(("backend", "_backend()", "backend()", "backends().get()", "azure"))
    assert len(calls) > 5
    for where, method, call in calls:
        _bind(Backend, where, method, call)


@pytest.mark.parametrize("handle_class", ["local", "azure", "memory"])
def test_each_backends_handle_implements_every_abstract_method(handle_class):
    if handle_class == "local":
        from amlocal.backends.local.backend import LocalRunHandle as cls
    elif handle_class == "azure":
        from amlocal.backends.azure.backend import AzureRunHandle as cls
    else:
        from memory_backend import MemoryRunHandle as cls
    assert not cls.__abstractmethods__, sorted(cls.__abstractmethods__)
