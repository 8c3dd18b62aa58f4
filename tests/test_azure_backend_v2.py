"""The Azure backend on SDK v2 (`--sdk v2`) past its translation: which SDK is chosen, what
happens without the `azure-v2` extra, and submitting through the real AzureSessionV2 over a fake
MLClient (fake_azure_v2.py, where the network begins): what is sent is what the dry run shows,
and the job is recorded in the one run history under its name, with its studio URL.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("azure.ai.ml")

from amlocal.backends.azure.dockerfiles import RUN_HISTORY_REQUIREMENT  # noqa: E402
from amlocal.backends.azure.sdk_choice import chosen_sdk  # noqa: E402
from amlocal.errors import UserInputError  # noqa: E402
from conftest import write_script  # noqa: E402
from contract_specs import SPECS, create_targets  # noqa: E402
from fake_azure_v2 import (STUDIO, SWEEP, azure_v2, in_empty_folder, invoke,  # noqa: E402,F401
                           v2_backend)

pytestmark = pytest.mark.filterwarnings("ignore:The `context` parameter is deprecated")


# -- which SDK -----------------------------------------------------------------------------------

def test_the_sdk_comes_from_the_option_the_environment_or_amlocal_toml(tmp_path, monkeypatch):
    monkeypatch.delenv("AMLOCAL_AZURE_SDK", raising=False)
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    assert chosen_sdk(start=project / "sub") == "v1"  # the default
    (project / "amlocal.toml").write_text('[azure]\nsdk = "v2"\n')
    assert chosen_sdk(start=project / "sub") == "v2"  # found from a folder below
    monkeypatch.setenv("AMLOCAL_AZURE_SDK", "v1")
    assert chosen_sdk(start=project / "sub") == "v1"  # the environment before the file
    assert chosen_sdk("v2", start=project / "sub") == "v2"  # the option before both
    monkeypatch.setenv("AMLOCAL_AZURE_SDK", "v3")
    with pytest.raises(UserInputError, match="AMLOCAL_AZURE_SDK: unknown Azure ML SDK 'v3'"):
        chosen_sdk(start=project)
    monkeypatch.delenv("AMLOCAL_AZURE_SDK")
    (project / "amlocal.toml").write_text("[azure\n")
    with pytest.raises(UserInputError, match="cannot read .*amlocal.toml"):
        chosen_sdk(start=project)


def test_amlocal_toml_makes_v2_the_default_of_the_command_line(amlocal_home, in_empty_folder):
    (in_empty_folder / "amlocal.toml").write_text('[azure]\nsdk = "v2"\n')
    source = write_script(in_empty_folder / "src", "train.py", "print('hi')\n")
    result = invoke("run", source, "--script", "train.py", "--backend", "azure", "--compute",
                    "c1", "--dry-run", "--json")
    assert json.loads(result.stdout)["sdk"].startswith("azure-ai-ml ")
    result = invoke("run", source, "--script", "train.py", "--backend", "azure", "--sdk", "v1",
                    "--compute", "c1", "--dry-run", "--json")
    if result.exit_code == 0:  # (with the `azure` extra)
        assert json.loads(result.stdout)["sdk"].startswith("azureml-core ")


def test_sdk_goes_with_the_azure_backend_only(amlocal_home, in_empty_folder):
    source = write_script(in_empty_folder / "src", "train.py", "print('hi')\n")
    result = invoke("run", source, "--script", "train.py", "--sdk", "v2")
    assert result.exit_code == 2
    assert "--sdk chooses the Azure ML SDK: use it with --backend azure" in result.stderr


# -- without the extra ---------------------------------------------------------------------------

_HIDING = textwrap.dedent("""
    import sys

    hidden = sys.argv[1]

    class Hide:
        # What a Python without the package sees: no such package at all.
        def find_spec(self, name, path=None, target=None):
            if name == hidden or name.startswith(hidden + "."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    from amlocal.cli.main import main
    sys.argv = ["amlocal"] + sys.argv[2:]
    main()
""")


def amlocal_without(package, *args, cwd, home):
    """`amlocal ARGS` in a Python where `package` (and what is below it) cannot be imported."""
    environment = {**os.environ, "AMLOCAL_HOME": str(home)}
    environment.pop("AMLOCAL_AZURE_SDK", None)
    return subprocess.run([sys.executable, "-c", _HIDING, package, *[str(arg) for arg in args]],
                          capture_output=True, text=True, cwd=cwd, timeout=120, env=environment)


def test_without_the_extra_sdk_v2_says_which_extra_to_install(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", "print('hi')\n")
    for extra in (["--dry-run"], []):
        result = amlocal_without("azure.ai", "run", source, "--script", "train.py", "--backend",
                                 "azure", "--sdk", "v2", "--compute", "c1", *extra,
                                 cwd=tmp_path, home=amlocal_home)
        assert result.returncode == 2, result.stderr
        assert "pip install 'amlocal[azure-v2]'" in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def modules_loaded_by(imports, prefix):
    """The modules whose names start with `prefix` that `import IMPORTS` loads, in a new Python."""
    code = (f"import sys, {imports}; "
            f"print(sorted(m for m in sys.modules if m.startswith({prefix!r})))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def test_the_command_line_loads_no_azure_backend_until_it_is_asked_for():
    assert modules_loaded_by("amlocal.cli.main", "amlocal.backends.azure") == "[]"


def test_importing_the_cli_and_the_azure_backend_imports_no_azure_ai_ml():
    assert modules_loaded_by("amlocal.cli.main, amlocal.backends.azure", "azure.ai") == "[]"


# -- submitting, through the real session over a fake MLClient ---------------------------------

@pytest.mark.parametrize("name", sorted(SPECS))
def test_each_contract_spec_is_sent_as_its_dry_run_shows(name, amlocal_home, azure_v2, tmp_path):
    backend = v2_backend(amlocal_home)
    spec = SPECS[name](tmp_path)
    shown = backend.dry_run(spec)

    handle = backend.submit(spec)

    sent = azure_v2.submitted[handle.id]
    expected = dict(shown["job"], name=handle.id)
    assert {key: value for key, value in sent["job"].items() if key != "environment"} == \
        {key: value for key, value in expected.items() if key != "environment"}
    assert sent["job"]["environment"]["version"] == shown["job"]["environment"]["version"]
    assert sent["dockerfile"] == shown["environment"]["dockerfile"]
    assert sent["build_context"] == ["Dockerfile"]
    assert sent["experiment"] == spec.experiment
    for upload in shown["uploads"]:
        source = Path(upload["from"])
        files = [source] if source.is_file() else sorted(p for p in source.rglob("*")
                                                         if p.is_file())
        for file in files:
            relative = file.name if source.is_file() else file.relative_to(source).as_posix()
            key = ("workspaceblobstore", f"{upload['target_path']}/{relative}")
            assert azure_v2.blobs[key] == file.read_bytes()


def test_submit_creates_the_cluster_and_records_the_job_in_the_history(amlocal_home, azure_v2,
                                                                       tmp_path):
    backend = v2_backend(amlocal_home)

    handle = backend.submit(SPECS["arguments_and_inputs"](tmp_path))

    cluster = azure_v2.created["cpu-cluster"]
    assert (cluster.size, cluster.max_instances) == ("STANDARD_D2_V2", 2)
    details = handle.get_details(refresh=False)
    assert details["backend"] == "azure" and details["executor"] == "amlcompute"
    assert details["status"] == "Starting"
    assert details["portal_url"] == STUDIO.format(name=handle.id)
    assert details["workspace"]["workspace_name"] == "ws-prod"
    assert (Path(details["run_dir"]) / "snapshot" / "probe.py").is_file()
    record = backend.store.get_run(handle.id)
    assert record["spec"]["azure"]["sdk"] == "v2"
    # An unchanged input is not uploaded twice (its path holds a hash of its content).
    blobs = dict(azure_v2.blobs)
    backend.submit(SPECS["arguments_and_inputs"](tmp_path))
    assert azure_v2.blobs == blobs


def test_the_handle_of_a_v2_job_follows_it_through_the_v2_session(amlocal_home, azure_v2,
                                                                  tmp_path, monkeypatch):
    from amlocal.backends import open_run

    monkeypatch.setenv("AMLOCAL_AZURE_POLL_S", "0")
    backend = v2_backend(amlocal_home)
    run_id = backend.submit(SPECS["minimal"](tmp_path)).id
    azure_v2.statuses[run_id] = ["Running", "Completed"]

    handle = open_run(run_id, home=amlocal_home)  # as `amlocal runs ...` opens it: sdk recorded
    assert handle.get_status() == "Running"
    lines = []
    handle.wait(on_event=lambda event: lines.append(getattr(event, "line", None)))
    assert handle.get_status() == "Completed"
    assert f"Job {run_id}: Completed" in lines
    assert handle.set_tags({"team": "vision"})["team"] == "vision"


def test_cancel_goes_to_azure_through_the_v2_session(amlocal_home, azure_v2, tmp_path):
    run_id = v2_backend(amlocal_home).submit(SPECS["minimal"](tmp_path)).id
    result = invoke("runs", "cancel", run_id, "--json")
    assert azure_v2.canceled == [run_id]
    assert json.loads(result.stdout)["status"] == "Canceled"


def test_a_sweep_is_submitted_as_one_sweep_job(amlocal_home, azure_v2, tmp_path):
    backend = v2_backend(amlocal_home)
    handle = backend.submit_sweep(SPECS["minimal"](tmp_path), SWEEP)
    sent = azure_v2.submitted[handle.id]
    assert sent["job"]["type"] == "sweep" and sent["job"]["name"] == handle.id
    assert sent["dockerfile"].rstrip().endswith(f"'{RUN_HISTORY_REQUIREMENT}'")
    assert backend.store.get_run(handle.id)["spec"]["sweep"] == SWEEP


def test_the_cli_submits_with_sdk_v2(amlocal_home, azure_v2, tmp_path):
    create_targets(v2_backend(amlocal_home).store)
    source = write_script(tmp_path / "src", "train.py", "print('hi')\n")
    result = invoke("run", source, "--script", "train.py", "--backend", "azure", "--sdk", "v2",
                    "--compute", "cpu-cluster", "--detach", "--json", "--", "--lr", "0.1")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["backend"] == "azure"
    assert record["portal_url"] == STUDIO.format(name=record["id"])
    assert azure_v2.submitted[record["id"]]["job"]["command"] == "python train.py --lr 0.1"


def test_the_emulators_workspace_is_refused_for_v2_with_what_to_use(amlocal_home):
    from amlocal.backends.azure.errors import AzureConfigError
    from amlocal.backends.azure.session_v2 import AzureSessionV2

    # The config.json `amlocal serve` writes: <home>/emulator/config.json, naming its endpoint.
    config = amlocal_home / "emulator" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"subscription_id": "00000000-0000-0000-0000-000000000000",
                                  "resource_group": "amlocal", "workspace_name": "local",
                                  "endpoint": "http://127.0.0.1:1"}))
    with pytest.raises(AzureConfigError, match="use --sdk v1 with it"):
        AzureSessionV2(config)


def test_a_v2_jobs_metrics_files_and_logs_are_read_from_the_run_history(amlocal_home, azure_v2,
                                                                         tmp_path, monkeypatch):
    # azure-ai-ml has no call for them; the job is a run of the run history azureml-core
    # reads, here the v1 seam's fake (fake_azure.py) holding what Azure would.
    pytest.importorskip("azureml.core")
    from amlocal.backends.azure import session as session_module
    from fake_azure import FakeAzure, FakeSession

    history = FakeAzure()
    monkeypatch.setattr(session_module, "AzureSession",
                        lambda config_path: FakeSession(history, config_path))
    run_id = v2_backend(amlocal_home).submit(SPECS["minimal"](tmp_path)).id
    azure_v2.statuses[run_id] = ["Completed"]
    history.metrics[run_id] = {"accuracy": [0.5, 0.75]}
    history.files[run_id] = {"outputs/model.npz": b"weights",
                             "user_logs/std_log.txt": b"training...\ndone\n"}

    assert json.loads(invoke("runs", "metrics", run_id, "--json").stdout) == {
        "accuracy": [0.5, 0.75]}
    assert invoke("runs", "logs", run_id).stdout == "training...\ndone\n"
    invoke("runs", "download", run_id, "--prefix", "outputs/", "-o", tmp_path / "dl")
    assert (tmp_path / "dl" / "outputs" / "model.npz").read_bytes() == b"weights"


def test_sign_in_and_service_errors_become_errors_a_user_can_act_on():
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    from amlocal.backends.azure.errors import AzureAuthenticationError, AzureError
    from amlocal.backends.azure.session_v2 import _azure_call

    with pytest.raises(AzureAuthenticationError, match="sign-in failed.*az login.*AZURE_CLIENT_ID"):
        with _azure_call("opening the workspace"):
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")
    with pytest.raises(AzureError) as raised:
        with _azure_call("submitting job j1"):
            raise HttpResponseError("quota exceeded for https://a.blob.core.windows.net/c?"
                                    "sv=2019&sig=S3cr3t")
    assert "quota exceeded" in str(raised.value) and "S3cr3t" not in str(raised.value)


def test_without_azureml_core_sdk_v2_still_works(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py", "print('hi')\n")
    result = amlocal_without("azureml", "run", source, "--script", "train.py", "--backend",
                             "azure", "--sdk", "v2", "--compute", "c1", "--dry-run", "--json",
                             cwd=tmp_path, home=amlocal_home)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["job"]["command"] == "python train.py"
    v1 = amlocal_without("azureml", "run", source, "--script", "train.py", "--backend", "azure",
                         "--sdk", "v1", "--compute", "c1", "--dry-run", cwd=tmp_path,
                         home=amlocal_home)
    assert 'pip install "amlocal[azure]"' in v1.stderr  # (the package is hidden indeed)


def test_sdk_code_dry_runs_on_v2_where_the_environment_says_so(amlocal_home, in_empty_folder,
                                                                monkeypatch, capsys):
    from amlocal.core import Environment, Experiment, ScriptRunConfig, Workspace

    monkeypatch.setenv("AMLOCAL_AZURE_SDK", "v2")
    source = write_script(in_empty_folder / "src", "train.py", "print('hi')\n")
    config = ScriptRunConfig(source_directory=str(source), script="train.py",
                             arguments=["--lr", 0.1], compute_target="cpu-cluster",
                             environment=Environment("sklearn"))

    document = Experiment(Workspace.from_config(), "sdk-dry").submit(config, tags={"a": "1"},
                                                                     dry_run=True)

    assert document["job"]["command"] == "python train.py --lr 0.1"
    assert document["job"]["tags"] == {"a": "1"}
    assert "Command job, as azure-ai-ml serializes it:" in capsys.readouterr().out
