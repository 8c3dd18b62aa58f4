"""The Azure backend's effectful part, against a fake of the one seam (backends/azure/session.py):
AzureSession is where the network begins, and the only thing faked. Everything before it is
real: the translation to azureml-core objects, the local run history the Azure runs are
recorded in, the CLI, the SDK-shaped Run over the handle.

Also here: azureml-core's exceptions as the seam turns them into amlocal's, redaction, and the
backend with the azureml packages absent (a subprocess where they cannot be imported).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("azureml.core")

from click.testing import CliRunner  # noqa: E402

from amlocal.backends import open_run, status as run_status  # noqa: E402
from amlocal.backends.azure import AzureBackend, session as session_module  # noqa: E402
from amlocal.backends.azure.errors import (AzureAuthenticationError, AzureComputeError,  # noqa: E402
                                           AzureConfigError, AzureError, redact)
from amlocal.backends.base import LogLine, StatusChanged  # noqa: E402
from amlocal.cli.main import cli  # noqa: E402
from amlocal.errors import IllegalTransitionError  # noqa: E402
from conftest import REPO, write_script  # noqa: E402
from contract_specs import SPECS, create_targets  # noqa: E402
from fake_azure import PORTAL, FakeSession, azure  # noqa: E402,F401 (azure: a fixture)

SECRET = "sv=2019-02-02&sr=b&sig=S3cr3tSignature%3D&se=2026-12-01"


@pytest.fixture
def backend(amlocal_home, azure):
    backend = AzureBackend(home=amlocal_home)
    create_targets(backend.store)
    return backend


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


# -- submitting ------------------------------------------------------------------------------------

def test_submit_sends_what_the_dry_run_shows_and_records_the_run_locally(backend, azure, tmp_path):
    spec = SPECS["arguments_and_inputs"](tmp_path)
    shown = backend.dry_run(spec)
    events = []

    handle = backend.submit(spec, on_event=events.append)

    sent = azure.submitted[handle.id]
    assert sent["run_configuration"] == shown["run_configuration"]
    assert sent["experiment"] == "contract-inputs"
    assert [upload.describe() for upload in azure.uploads] == shown["uploads"]
    assert azure.created["cpu-cluster"].vm_size == "STANDARD_D2_V2"
    assert azure.created["cpu-cluster"].scale_settings.maximum_node_count == 2
    details = handle.get_details(refresh=False)
    assert details["backend"] == "azure" and details["executor"] == "amlcompute"
    assert details["status"] == "Starting"
    assert details["portal_url"] == PORTAL.format(run_id=handle.id)
    assert details["workspace"]["workspace_name"] == "ws-prod"
    assert (Path(details["run_dir"]) / "snapshot" / "probe.py").is_file()
    lines = [event.line for event in events if isinstance(event, LogLine)]
    assert any(line.startswith("Creating compute target cpu-cluster (STANDARD_D2_V2") for line in lines)
    assert any(line.startswith("Uploading input train") for line in lines)
    assert events[-1] == StatusChanged(handle.id, "Starting")


def test_status_is_refreshed_from_azure_through_the_state_machine(backend, azure, tmp_path):
    handle = backend.submit(SPECS["minimal"](tmp_path))
    azure.statuses[handle.id] = ["Running", "Completed"]

    assert handle.get_status() == "Running"
    assert handle.get_status() == "Completed"
    history = [status for status, _ in backend.store.status_history(handle.id)]
    assert history == ["NotStarted", "Starting", "Preparing", "Queued", "Running", "Finalizing",
                       "Completed"]
    azure.statuses[handle.id] = ["Running"]  # an ended run is not asked again
    assert handle.get_status() == "Completed"


def test_an_existing_cluster_of_the_same_size_is_used_as_it_is(backend, azure, tmp_path):
    azure.clusters["cpu-cluster"] = "Standard_D2_v2"
    backend.submit(SPECS["minimal"](tmp_path))
    assert azure.created == {}


def test_a_cluster_that_exists_with_another_vm_size_is_refused_before_anything_is_sent(
        backend, azure, tmp_path):
    azure.clusters["cpu-cluster"] = "STANDARD_NC6"
    with pytest.raises(AzureComputeError, match="exists in workspace ws-prod with VM size "
                                                "STANDARD_NC6, but the local target 'cpu-cluster'.*"
                                                "STANDARD_D2_V2"):
        backend.submit(SPECS["arguments_and_inputs"](tmp_path))
    assert azure.uploads == [] and azure.submitted == {}
    assert backend.store.list_runs() == []


def test_a_cluster_missing_everywhere_says_how_to_define_it(backend, azure, tmp_path):
    import dataclasses
    spec = dataclasses.replace(SPECS["minimal"](tmp_path), compute="nowhere")
    with pytest.raises(AzureComputeError, match="has no compute target named 'nowhere'.*"
                                                "amlocal compute create nowhere"):
        backend.submit(spec)


def test_a_quota_error_is_passed_through_with_its_message(amlocal_home, azure, tmp_path):
    quota = ("Operation results in exceeding quota limits of Core. Maximum allowed: 0, Current in "
             "use: 0, Additional requested: 6.")
    azure.errors["create_compute"] = AzureComputeError(f"creating compute target 'gpu-cluster': {quota}")
    backend = AzureBackend(home=amlocal_home)
    create_targets(backend.store)
    source = write_script(tmp_path / "src", "train.py", "print('hi')\n")

    result = invoke("run", source, "--script", "train.py", "--backend", "azure",
                    "--compute", "gpu-cluster")

    assert result.exit_code == 2
    assert quota in result.stderr


# -- the CLI and the one history ------------------------------------------------------------------

def test_cli_run_streams_the_azure_run_and_exits_by_its_outcome(amlocal_home, azure, tmp_path):
    backend = AzureBackend(home=amlocal_home)
    create_targets(backend.store)
    source = write_script(tmp_path / "src", "train.py", "print('hi')\n")
    original_submit = FakeSession.submit

    def submit(self, experiment, config, tags, run_id):
        azure.logs[run_id] = ["RunId: " + run_id, "epoch 1 accuracy 0.9",
                              f"Streaming https://acct.blob.core.windows.net/logs/std_log.txt?{SECRET}"]
        azure.statuses[run_id] = ["Running", "Completed"]
        return original_submit(self, experiment, config, tags, run_id)

    FakeSession.submit, saved = submit, FakeSession.submit
    try:
        result = invoke("run", source, "--script", "train.py", "--backend", "azure",
                        "--compute", "cpu-cluster", "--json", "--", "--epochs", "1")
    finally:
        FakeSession.submit = saved

    assert result.exit_code == 0, result.output
    assert "epoch 1 accuracy 0.9" in result.stdout
    assert "Completed" in result.stderr
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["status"] == "Completed" and record["backend"] == "azure"
    assert "S3cr3tSignature" not in result.output
    submitted = next(iter(azure.submitted.values()))
    assert submitted["run_configuration"]["arguments"] == ["--epochs", "1"]


def test_runs_list_shows_azure_runs_beside_local_ones(amlocal_home, azure, tmp_path):
    backend = AzureBackend(home=amlocal_home)
    create_targets(backend.store)
    source = write_script(tmp_path / "src", "train.py", "print('local twin')\n")
    local = invoke("run", source, "--script", "train.py", "--executor", "process", "--json")
    assert local.exit_code == 0, local.output
    remote = invoke("run", source, "--script", "train.py", "--backend", "azure", "--compute",
                    "cpu-cluster", "--detach", "--json")
    assert remote.exit_code == 0, remote.output
    remote_id = json.loads(remote.stdout.strip().splitlines()[-1])["id"]
    azure.statuses[remote_id] = ["Running"]

    listed = invoke("runs", "list")
    assert "BACKEND" in listed.stdout and "PORTAL_URL" in listed.stdout
    row = next(line for line in listed.stdout.splitlines() if line.startswith(remote_id))
    assert " Queued " in row and " azure " in row and PORTAL.format(run_id=remote_id) in row
    assert any(" local " in line for line in listed.stdout.splitlines()[1:])

    refreshed = json.loads(invoke("runs", "list", "--refresh", "--json").stdout)
    by_backend = {record["backend"]: record for record in refreshed}
    assert by_backend["azure"]["status"] == "Running"
    assert by_backend["azure"]["portal_url"] == PORTAL.format(run_id=remote_id)
    assert by_backend["local"]["status"] == "Completed"


def test_runs_commands_reach_an_azure_run_through_its_handle(amlocal_home, azure, tmp_path):
    backend = AzureBackend(home=amlocal_home)
    create_targets(backend.store)
    run_id = backend.submit(SPECS["minimal"](tmp_path)).id
    azure.statuses[run_id] = ["Completed"]
    azure.metrics[run_id] = {"accuracy": [0.5, 0.75], "epochs": 2}
    azure.files[run_id] = {"outputs/model.npz": b"weights",
                           "user_logs/std_log.txt": b"training...\ndone\n"}

    shown = invoke("runs", "show", run_id)
    assert "Portal URL:  https://ml.azure.com/runs/" in shown.stdout
    assert "Backend:     azure" in shown.stdout
    assert "accuracy" in shown.stdout
    assert json.loads(invoke("runs", "metrics", run_id, "--json").stdout) == {
        "accuracy": [0.5, 0.75], "epochs": [2]}
    assert invoke("runs", "files", run_id).stdout.split() == ["outputs/model.npz",
                                                             "user_logs/std_log.txt"]
    assert invoke("runs", "logs", run_id).stdout == "training...\ndone\n"
    downloaded = invoke("runs", "download", run_id, "--prefix", "outputs/", "-o", tmp_path / "dl")
    assert (tmp_path / "dl" / "outputs" / "model.npz").read_bytes() == b"weights", downloaded.output


def test_cancel_goes_to_azure_and_the_record_follows(amlocal_home, azure, tmp_path):
    backend = AzureBackend(home=amlocal_home)
    create_targets(backend.store)
    run_id = backend.submit(SPECS["minimal"](tmp_path)).id

    result = invoke("runs", "cancel", run_id, "--json")

    assert azure.canceled == [run_id]
    assert json.loads(result.stdout)["status"] == "Canceled"


def test_the_sdk_run_works_over_the_azure_handle(amlocal_home, azure, tmp_path, capsys):
    from amlocal.core import Workspace
    from amlocal.experiment import Experiment
    from amlocal.run import Run

    backend = AzureBackend(home=amlocal_home)
    create_targets(backend.store)
    handle = backend.submit(SPECS["minimal"](tmp_path))
    azure.logs[handle.id] = ["Streaming user_logs/std_log.txt", "loss 0.1"]
    azure.statuses[handle.id] = ["Completed"]
    azure.metrics[handle.id] = {"loss": 0.1}
    workspace = Workspace.get("local")
    run = Run(Experiment(workspace, "Default"), handle.id, _handle=handle)

    details = run.wait_for_completion(show_output=True)

    assert details["status"] == "Completed"
    assert "loss 0.1" in capsys.readouterr().out
    assert run.get_metrics() == {"loss": 0.1}
    assert run.get_portal_url() == PORTAL.format(run_id=handle.id)
    model = run.register_model("mnist-model", model_path="outputs/model.npz")
    assert (model.name, model.version) == ("mnist-model", 1)
    assert azure.models == [(handle.id, "mnist-model", "outputs/model.npz")]
    run.tag("team", "vision")
    assert azure.tags[handle.id] == {"team": "vision"}
    assert run.get_tags()["team"] == "vision"


def test_open_run_gives_each_run_the_handle_of_its_backend(amlocal_home, azure, tmp_path):
    backend = AzureBackend(home=amlocal_home)
    create_targets(backend.store)
    run_id = backend.submit(SPECS["minimal"](tmp_path)).id
    assert type(open_run(run_id)).__name__ == "AzureRunHandle"
    with pytest.raises(Exception, match="no run with id"):
        open_run("missing_1_00000000")


# -- credentials -----------------------------------------------------------------------------------

def test_no_credential_reaches_the_history_json_output_or_logs(amlocal_home, azure, tmp_path,
                                                               monkeypatch):
    monkeypatch.setenv("AZUREML_SERVICE_PRINCIPAL_PASSWORD", "sp-password-value")
    backend = AzureBackend(home=amlocal_home)
    create_targets(backend.store)
    run_id = backend.submit(SPECS["minimal"](tmp_path)).id
    azure.statuses[run_id] = ["Failed"]
    azure.details_extra[run_id] = {
        "error": {"error": {"message": f"could not read https://a.blob.core.windows.net/x?{SECRET}"
                                       " with Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"}},
        "logFiles": {"user_logs/std_log.txt": f"https://a.blob.core.windows.net/l?{SECRET}"}}

    shown = invoke("runs", "show", run_id, "--json")
    listed = invoke("runs", "list", "--json")
    record = backend.store.get_run(run_id)

    assert json.loads(shown.stdout)["status"] == "Failed"
    for text in (shown.stdout, listed.stdout, json.dumps(record, default=str)):
        assert "S3cr3tSignature" not in text
        assert "eyJhbGciOiJSUzI1NiJ9" not in text
        assert "sp-password-value" not in text
    assert "sig=REDACTED" in record["error"]


def test_the_dry_run_carries_no_host_credentials(amlocal_home, tmp_path, monkeypatch):
    monkeypatch.setenv("AZUREML_SERVICE_PRINCIPAL_PASSWORD", "sp-password-value")
    monkeypatch.setenv("PIP_INDEX_URL", "https://user:pip-token-value@pypi.example.com/simple")
    monkeypatch.chdir(tmp_path)
    backend = AzureBackend(home=amlocal_home)
    create_targets(backend.store)

    text = json.dumps(backend.dry_run(SPECS["environment_and_limits"](tmp_path / "s")))

    assert "sp-password-value" not in text and "pip-token-value" not in text


@pytest.mark.parametrize("text, hidden", [
    (f"https://a.blob.core.windows.net/c/f.txt?{SECRET}", "S3cr3tSignature"),
    ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
    ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k3y==;", "k3y=="),
    ('{"password": "hunter2"}', "hunter2"),
    ("token eyJhbGciOiJIUzI1NiJ9.eyJhIjoxfQ.sig_part", "eyJhbGciOiJIUzI1NiJ9"),
])
def test_redact_hides_sas_tokens_bearer_tokens_keys_and_passwords(text, hidden):
    assert hidden not in redact(text)
    assert "REDACTED" in redact(text)


def test_redact_leaves_ordinary_text_alone():
    text = "Run chainer-mnist_1_abcdef12 Completed: https://ml.azure.com/runs/x?wsid=/subscriptions/s"
    assert redact(text) == text


# -- errors a user can act on -------------------------------------------------------------------

def test_without_a_config_file_submitting_says_where_to_get_one(amlocal_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backend = AzureBackend(home=amlocal_home)
    create_targets(backend.store)
    with pytest.raises(AzureConfigError, match="no workspace configuration file \\(config.json\\).*"
                                               "Download config.json"):
        backend.submit(SPECS["minimal"](tmp_path / "s"))
    assert backend.store.list_runs() == []


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read the workspace configuration file"),
    ('{"workspace_name": "ws"}', "does not seem to contain the required parameters"),
    ('{"subscription_id": null, "resource_group": null, "workspace_name": "local"}',
     "names the local workspace"),
])
def test_a_bad_config_file_is_a_one_line_error(amlocal_home, tmp_path, monkeypatch, content, message):
    (tmp_path / "config.json").write_text(content)
    monkeypatch.chdir(tmp_path)
    source = write_script(tmp_path / "src", "train.py", "print('hi')\n")

    result = invoke("run", source, "--script", "train.py", "--backend", "azure", "--compute", "c1")

    assert result.exit_code == 2
    assert message in result.stderr


def test_azureml_exceptions_become_errors_a_user_can_act_on():
    from azureml.exceptions import (AuthenticationException, ComputeTargetException,
                                    UserErrorException)

    with pytest.raises(AzureAuthenticationError, match="sign-in failed.*az login.*"
                                                       "AZUREML_SERVICE_PRINCIPAL_ID"):
        with session_module._azure_call("opening the workspace"):
            raise AuthenticationException("Could not retrieve user token. Please run 'az login'")
    quota = "Received bad response: Operation results in exceeding quota limits of Core."
    with pytest.raises(AzureComputeError, match="creating compute target 'c1': " + quota):
        with session_module._azure_call("creating compute target 'c1'"):
            raise ComputeTargetException(quota)
    with pytest.raises(AzureError) as raised:
        with session_module._azure_call("submitting"):
            raise UserErrorException(f"bad upload https://a.blob.core.windows.net/c?{SECRET}")
    assert "S3cr3tSignature" not in str(raised.value)
    with pytest.raises(AzureError, match="ConnectionError: no route"):
        with session_module._azure_call("reading run x"):
            raise ConnectionError("no route")


def test_the_seam_hands_streamed_output_on_line_by_line_redacted():
    lines = []
    writer = session_module._LineWriter(lines.append)
    writer.write("RunId: r1\nWeb View: https://x/?")
    writer.write(f"{SECRET}\npartial")
    writer.close_pending()
    assert lines == ["RunId: r1", "Web View: https://x/?sv=REDACTED&sr=REDACTED&sig=REDACTED"
                     "&se=REDACTED", "partial"]


def test_dry_run_is_refused_for_the_local_backend(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", "print('hi')\n")
    result = invoke("run", source, "--script", "train.py", "--dry-run")
    assert result.exit_code == 2
    assert "--dry-run shows what would be submitted to Azure ML: use it with --backend azure" \
        in result.stderr


def test_the_done_when_dry_run_prints_the_run_configuration(amlocal_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("run", REPO / "trainer", "--script", "chainer_mnist.py", "--backend", "azure",
                    "--compute", "gpu-cluster", "--dry-run",
                    "--input", f"mnist={REPO / 'tests' / 'data' / 'mnist-10k'}",
                    "--", "--epochs", "10", "--batchsize", "128", "--output_dir", "./outputs")

    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.startswith("Dry run: nothing is sent to Azure ML.")
    assert '"script": "chainer_mnist.py"' in text
    assert '"target": "gpu-cluster"' in text
    assert '"--batchsize",\n    "128"' in text
    assert "Environment amlocal-chainer, which Azure builds from this Dockerfile:" in text
    assert "FROM ${BASE_IMAGE} AS build" in text
    assert '"dataStoreName": "workspaceblobstore"' in text and '"mnist": {' in text
    document = json.loads(invoke("run", REPO / "trainer", "--script", "chainer_mnist.py",
                                 "--backend", "azure", "--compute", "gpu-cluster", "--dry-run",
                                 "--json", "--input",
                                 f"mnist={REPO / 'tests' / 'data' / 'mnist-10k'}").stdout)
    assert document["run_configuration"]["environment"]["docker"]["baseDockerfile"] == \
        document["environment"]["dockerfile"]
    assert not list((amlocal_home / "runs").iterdir())  # nothing recorded


def test_experiment_submit_dry_run_prints_and_returns_the_submission(amlocal_home, tmp_path,
                                                                     monkeypatch, capsys):
    from amlocal.core import Environment, Experiment, ScriptRunConfig, Workspace

    monkeypatch.chdir(tmp_path)
    source = write_script(tmp_path / "src", "train.py", "print('hi')\n")
    config = ScriptRunConfig(source_directory=str(source), script="train.py",
                             arguments=["--lr", 0.1], compute_target="cpu-cluster",
                             environment=Environment("sklearn"))

    document = Experiment(Workspace.from_config(), "sdk-dry").submit(config, tags={"a": "1"},
                                                                     dry_run=True)

    assert document["run_configuration"]["arguments"] == ["--lr", "0.1"]
    assert document["run_configuration"]["target"] == "cpu-cluster"
    assert document["tags"] == {"a": "1"}
    assert document["environment"]["name"] == "amlocal-python"
    assert "Run configuration, as azureml-core serializes it" in capsys.readouterr().out
    assert not list((amlocal_home / "runs").iterdir())


# -- the state machine for observed statuses --------------------------------------------------

def test_path_to_takes_the_shortest_allowed_route_and_never_leaves_an_end():
    assert run_status.path_to("NotStarted", "Running") == ["Preparing", "Queued", "Running"]
    assert run_status.path_to("Queued", "Queued") == []
    assert run_status.path_to("Running", "Canceled") == ["CancelRequested", "Canceled"]
    with pytest.raises(IllegalTransitionError):
        run_status.path_to("Completed", "Running")
    assert run_status.from_azure("Provisioning") == "Preparing"
    assert run_status.from_azure("SomethingNew") is None


# -- without the azureml packages ---------------------------------------------------------------

_HIDE_AZUREML = textwrap.dedent("""
    import sys

    class HideAzureml:
        # What a Python without the `azure` extra sees: no azureml package at all.
        def find_spec(self, name, path=None, target=None):
            if name == "azureml" or name.startswith("azureml."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, HideAzureml())
    from amlocal.cli.main import main
    sys.argv = ["amlocal"] + sys.argv[1:]
    main()
""")


def _amlocal_without_azureml(*args, cwd, home):
    return subprocess.run([sys.executable, "-c", _HIDE_AZUREML, *[str(arg) for arg in args]],
                          capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "AMLOCAL_HOME": str(home)})


def test_without_azureml_local_runs_work_and_azure_says_what_to_install(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", "print('local ok')\n")

    local = _amlocal_without_azureml("run", source, "--script", "train.py", "--executor",
                                     "process", cwd=tmp_path, home=amlocal_home)
    assert local.returncode == 0, local.stderr
    assert "local ok" in local.stdout

    for extra in (["--dry-run"], []):
        remote = _amlocal_without_azureml("run", source, "--script", "train.py", "--backend",
                                          "azure", "--compute", "c1", *extra, cwd=tmp_path,
                                          home=amlocal_home)
        assert remote.returncode == 2, remote.stderr
        assert 'pip install "amlocal[azure]"' in remote.stderr
        assert "Traceback" not in remote.stderr

    listed = _amlocal_without_azureml("runs", "list", cwd=tmp_path, home=amlocal_home)
    assert listed.returncode == 0 and "local" in listed.stdout


def test_importing_the_cli_and_the_azure_backend_imports_no_azureml():
    code = ("import sys, amlocal.cli.main, amlocal.backends.azure; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'azureml'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_with_the_extra_installed_a_script_outside_a_run_gets_azureml_cores_own_error(tmp_path):
    # The run-side API redirects the real azureml-core's Run.get_context; outside a run,
    # allow_offline=False raises azureml-core's RunEnvironmentException (which takes no message).
    from amlocal.backends.local.lifecycle import RUNTIME_DIR

    script = write_script(tmp_path, "train.py", textwrap.dedent("""
        from azureml.core import Run
        from azureml.exceptions import RunEnvironmentException
        try:
            Run.get_context(allow_offline=False)
        except RunEnvironmentException as error:
            print("raised", type(error).__module__)
    """)) / "train.py"
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("AZUREML_", "AMLOCAL_"))}
    environment["PYTHONPATH"] = str(RUNTIME_DIR)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env=environment, timeout=60)
    assert result.stdout.strip() == "raised azureml.exceptions._azureml_exception", result.stderr


def test_sdk_code_submits_to_azure_when_config_json_names_a_workspace(amlocal_home, azure,
                                                                      tmp_path, capsys):
    from amlocal.core import Environment, Experiment, ScriptRunConfig, Workspace

    ws = Workspace.from_config()  # the fixture's .azureml/config.json: ws-prod on Azure
    create_targets(AzureBackend(home=amlocal_home).store)
    source = write_script(tmp_path / "src", "train.py", "print('hi')\n")
    config = ScriptRunConfig(source_directory=str(source), script="train.py",
                             arguments=["--lr", 0.1], compute_target="cpu-cluster",
                             environment=Environment.from_pip_requirements(
                                 "env", str(write_script(tmp_path / "req", "r.txt", "numpy\n")
                                            / "r.txt")))

    run = Experiment(ws, "sdk-azure").submit(config, tags={"source": "notebook"})
    azure.logs[run.id] = ["hi"]
    azure.statuses[run.id] = ["Completed"]
    run.wait_for_completion(show_output=True)

    sent = azure.submitted[run.id]
    assert sent["experiment"] == "sdk-azure" and sent["tags"] == {"source": "notebook"}
    assert sent["run_configuration"]["arguments"] == ["--lr", "0.1"]
    assert "RUN printf '%s\\n' numpy > /tmp/requirements.txt" in \
        sent["run_configuration"]["environment"]["docker"]["baseDockerfile"]
    assert run.get_status() == "Completed"
    assert "hi" in capsys.readouterr().out
    assert [r.id for r in Experiment(ws, "sdk-azure").get_runs()] == [run.id]
    assert ws.get_run(run.id).get_portal_url() == PORTAL.format(run_id=run.id)


def test_without_azureml_a_config_naming_an_azure_workspace_says_what_to_install(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"subscription_id": "sub-1", "resource_group": "rg", "workspace_name": "ws-prod"}))
    code = _HIDE_AZUREML.split("from amlocal.cli.main")[0] + textwrap.dedent("""
        from amlocal.core import Workspace
        try:
            Workspace.from_config()
        except Exception as error:
            print(type(error).__name__, error)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.stdout.startswith("WorkspaceException "), result.stderr
    assert "'ws-prod'" in result.stdout and 'pip install "amlocal[azure]"' in result.stdout


def test_ctrl_c_while_following_an_azure_run_cancels_it(amlocal_home, azure, tmp_path, monkeypatch):
    backend = AzureBackend(home=amlocal_home)
    create_targets(backend.store)
    source = write_script(tmp_path / "src", "train.py", "print('hi')\n")
    followed = []

    def wait_for_completion(self, run_id, on_line):
        followed.append(run_id)
        if len(followed) == 1:
            raise KeyboardInterrupt  # what the seam raises when Ctrl-C stops azureml-core's wait
        self.azure.statuses[run_id] = ["Canceled"]

    monkeypatch.setattr(FakeSession, "wait_for_completion", wait_for_completion)
    result = invoke("run", source, "--script", "train.py", "--backend", "azure",
                    "--compute", "cpu-cluster")

    assert result.exit_code == 1
    assert azure.canceled == followed[:1]
    assert "Canceled" in result.stderr
