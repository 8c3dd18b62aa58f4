"""`amlocal services deploy ... --backend azure`: a deployment to Azure Container Instances,
translated into real azureml-core objects (backends/azure/deploy_v1.py) and the request body
azureml-core builds for them, checked against golden files (tests/golden/azure/deploy_*.json);
the real deployment goes through the session, faked at that seam only (fake_azure.py).

A dry run needs no Azure account, no network and no Docker: these tests point Docker and
https at addresses where nothing answers.

AMLOCAL_UPDATE_GOLDEN=1 rewrites the golden files (then review the diff).
"""

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("azureml.core")

from click.testing import CliRunner  # noqa: E402

from amlocal.backends.azure import session as session_module  # noqa: E402
from amlocal.backends.azure.deploy_v1 import INFERENCE_REQUIREMENT  # noqa: E402
from amlocal.cli.main import cli  # noqa: E402
from conftest import write_script  # noqa: E402
from fake_azure import FakeSession, azure  # noqa: E402,F401

GOLDEN = Path(__file__).parent / "golden" / "azure"
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing answers


@pytest.fixture
def offline(monkeypatch, amlocal_home):
    """No Docker engine and no https route: a dry run must need neither."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, NOWHERE)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


@pytest.fixture
def app(tmp_path):
    """A scoring app: an entry script and a helper module in one folder."""
    source = write_script(tmp_path / "app", "score.py",
                          "import json\n\ndef init():\n    pass\n\n"
                          "def run(raw):\n    return json.loads(raw)\n")
    (source / "helpers.py").write_text("SCALE = 255\n")
    (source / "helpers.txt").write_text("not a script\n")
    return source


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def deploy(*args):
    return invoke("services", "deploy", *args, "--backend", "azure")


def dry_run_document(*args):
    result = deploy(*args, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def normalized(document, root):
    return json.loads(json.dumps(document).replace(str(Path(root).resolve()), "<root>"))


def check_golden(name, actual):
    golden_file = GOLDEN / f"deploy_{name}.json"
    if os.environ.get("AMLOCAL_UPDATE_GOLDEN"):
        golden_file.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    expected = json.loads(golden_file.read_text())
    # Field by field first, so that a difference names its field; then the whole document.
    for field in sorted(set(expected["payload"]) | set(actual["payload"])):
        assert actual["payload"].get(field) == expected["payload"].get(field), f"payload.{field}"
    for field in sorted(set(expected) | set(actual)):
        assert actual.get(field) == expected.get(field), field


AUTH_AND_LIMITS = ("--model", "mnist:3", "--entry-script", "score.py", "--auth",
                   "--cpu-cores", "1.5", "--memory-gb", "2", "--tag", "team=vision",
                   "--description", "MNIST digits", "--env", "SCALE=255", "--pip", "pillow")


def test_aci_deployment_with_auth_and_limits_matches_its_golden_file(offline, app, tmp_path,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    document = dry_run_document("mnist-svc", *AUTH_AND_LIMITS, "--source-dir", app)
    check_golden("aci_auth_limits", normalized(document, tmp_path))

    payload = document["payload"]
    assert payload["computeType"] == "ACI" and payload["authEnabled"] is True
    assert payload["containerResourceRequirements"] == {"cpu": 1.5, "memoryInGB": 2.0}
    assert payload["kvTags"] == {"team": "vision"} and payload["description"] == "MNIST digits"
    image_request = payload["environmentImageRequest"]
    assert image_request["modelIds"] == ["mnist:3"]
    environment = image_request["environment"]
    assert environment["environmentVariables"] == {
        "SCALE": "255", "AZUREML_SOURCE_DIRECTORY": "app", "AZUREML_ENTRY_SCRIPT": "app/score.py"}
    assert environment["python"]["userManagedDependencies"] is True
    dockerfile = document["environment"]["dockerfile"]
    assert environment["docker"]["baseDockerfile"] == dockerfile
    assert "pillow" in dockerfile and INFERENCE_REQUIREMENT in dockerfile
    assert "COPY amlocal-pip" not in dockerfile
    assert document["uploads"][0]["files"] == 3
    assert document["workspace"] is None


def test_a_deployment_of_two_models_matches_its_golden_file(offline, app, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    document = dry_run_document("digits-two", "--model", "mnist:1", "--model", "labels",
                                "--entry-script", "score.py", "--source-dir", app)
    check_golden("two_models", normalized(document, tmp_path))

    payload = document["payload"]
    assert payload["environmentImageRequest"]["modelIds"] == [
        "mnist:1", "labels:<latest version in the workspace>"]
    # Azure ML's own defaults where nothing is asked: no keys, the SDK's resource defaults.
    assert "authEnabled" not in payload or payload["authEnabled"] in (None, False)
    assert any("latest version" in note for note in document["notes"])


def test_the_dry_run_as_text_names_the_workspace_uploads_and_request(offline, app,
                                                                     azure):  # noqa: F811
    result = deploy("mnist-svc", *AUTH_AND_LIMITS, "--source-dir", app, "--dry-run")

    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.startswith("Dry run: nothing is sent to Azure ML.")
    assert "Workspace:       ws-prod (resource group rg-ml, subscription sub-1)" in text
    assert f"source folder: {app.resolve()} (3 files" in text
    assert '"authEnabled": true' in text and '"modelIds": [' in text
    assert "<the Dockerfile above; --json shows it in place>" in text


# -- the real deployment, faked at the seam -----------------------------------------------------

class DeployingSession(FakeSession):
    """The seam with a web service deployment: records what Model.deploy would be given."""

    def deploy_webservice(self, deployment, timeout_s=None, on_line=None):
        self.azure.deployed.append({"payload": deployment.payload(),
                                    "models": list(deployment.models), "timeout_s": timeout_s})
        state = self.azure.deploy_state
        return {"name": deployment.name, "state": state,
                "scoring_uri": f"http://{deployment.name}.westeurope.azurecontainer.io/score",
                "swagger_uri": None,
                "error": None if state == "Healthy" else "init() raised ValueError: no model"}

    def webservice_logs(self, name):
        return f"{name}: init() ran\n"


@pytest.fixture
def deploying(azure, monkeypatch):  # noqa: F811
    azure.deployed, azure.deploy_state = [], "Healthy"
    monkeypatch.setattr(session_module, "AzureSession",
                        lambda config_path: DeployingSession(azure, config_path))
    return azure


def test_deploy_sends_what_the_dry_run_shows_and_reports_the_service(deploying, app):
    shown = dry_run_document("mnist-svc", *AUTH_AND_LIMITS, "--source-dir", app)

    result = deploy("mnist-svc", *AUTH_AND_LIMITS, "--source-dir", app, "--timeout", "900")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == ("Service mnist-svc: Healthy at "
                                     "http://mnist-svc.westeurope.azurecontainer.io/score")
    [sent] = deploying.deployed
    assert sent["payload"] == shown["payload"] and sent["timeout_s"] == 900
    assert [(model.name, model.version) for model in sent["models"]] == [("mnist", 3)]


def test_a_deployment_that_fails_on_azure_exits_non_zero_with_azures_reason(deploying, app):
    deploying.deploy_state = "Failed"

    result = deploy("mnist-svc", "--model", "mnist:1", "--entry-script", "score.py",
                    "--source-dir", app, "--json")

    assert result.exit_code == 1
    assert json.loads(result.stdout)["state"] == "Failed"
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: service mnist-svc is Failed: init() raised ValueError: no model")


def test_deploying_without_a_workspace_config_says_where_to_get_one(offline, app, tmp_path,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = deploy("mnist-svc", "--model", "mnist:1", "--entry-script", "score.py",
                    "--source-dir", app)

    assert result.exit_code == 2
    assert "no workspace configuration file (config.json)" in result.stderr
    assert "Traceback" not in result.output


# -- bad input: one line, non-zero, nothing sent ---------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["Bad_Name", "--model", "m:1"], "provided service name is invalid"),
    (["svc-one", "--model", "m:1", "--entry-script", "../score.py"], "is not inside the source"),
    (["svc-one", "--model", "m:1", "--entry-script", "absent.py"], "is not a file in"),
    (["svc-one", "--model", "m:1", "--entry-script", "helpers.txt"], "only Python drivers"),
    (["svc-one", "--model", "m:1", "--model", "m:1"], "model m:1 is given twice"),
    (["svc-one", "--model", "m:1", "--kind", "aks"], "--backend azure deploys to ACI"),
    (["svc-one", "--model", "m:1", "--port", "8890"], "--port is local only"),
    (["svc-one", "--model", "bad name"], "model name"),
])
def test_bad_deployments_are_refused_in_one_line(offline, app, args, message, deploying):
    arguments = [*args] + ([] if "--entry-script" in args else ["--entry-script", "score.py"])
    for extra in (["--dry-run"], []):
        result = deploy(*arguments, "--source-dir", app, *extra)

        assert result.exit_code == 2, result.output
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("Error: ") and message in line, line
    assert deploying.deployed == []


def test_dry_run_and_workspace_config_need_the_azure_backend(app, amlocal_home):
    result = invoke("services", "deploy", "svc-one", "--model", "m:1", "--entry-script",
                    "score.py", "--source-dir", app, "--dry-run")

    assert result.exit_code == 2
    assert result.stderr.strip() == ("Error: --dry-run and --workspace-config go with "
                                     "--backend azure")


# -- Model.deploy on a workspace on Azure ML --------------------------------------------------------

def test_model_deploy_on_an_azure_workspace_deploys_to_aci_through_the_seam(offline, deploying,
                                                                            app):
    from amlocal import Workspace
    from amlocal.core.model import InferenceConfig, Model
    from amlocal.core.webservice import AciWebservice, LocalWebservice
    from amlocal.model_errors import WebserviceException

    ws = Workspace.from_config()
    assert ws.name == "ws-prod"
    Path("model.npz").write_bytes(b"weights")
    model = Model.register(ws, model_path="model.npz", model_name="mnist")
    inference_config = InferenceConfig(entry_script="score.py", source_directory=str(app))

    service = Model.deploy(ws, "mnist-svc", [model], inference_config,
                           AciWebservice.deploy_configuration(cpu_cores=1, memory_gb=1,
                                                              auth_enabled=True))
    service.wait_for_deployment(show_output=False)

    assert (service.state, service.compute_type) == ("Healthy", "ACI")
    assert service.scoring_uri == "http://mnist-svc.westeurope.azurecontainer.io/score"
    [sent] = deploying.deployed
    assert sent["payload"]["environmentImageRequest"]["modelIds"] == [f"mnist:{model.version}"]
    assert sent["payload"]["authEnabled"] is True
    assert sent["payload"]["containerResourceRequirements"] == {"cpu": 1, "memoryInGB": 1}
    assert service.get_logs() == "mnist-svc: init() ran\n"

    deploying.deploy_state = "Failed"
    failed = Model.deploy(ws, "mnist-svc", [model], inference_config, overwrite=True)
    with pytest.raises(WebserviceException, match="state: Failed"):
        failed.wait_for_deployment()
    with pytest.raises(WebserviceException, match="deploys to ACI"):
        Model.deploy(ws, "mnist-local", [model], inference_config,
                     LocalWebservice.deploy_configuration())
    with pytest.raises(WebserviceException, match="service name is invalid"):
        Model.deploy(ws, "Bad_Name", [model], inference_config)
