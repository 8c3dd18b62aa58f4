"""Web service deployments on SDK v2 (`amlocal services deploy ... --backend azure --sdk v2`): a
managed online endpoint and its deployment (backends/azure/deploy_v2.py) as azure-ai-ml
serializes them, checked against a golden file (tests/golden/azure_v2/deploy_*.yaml), and
deployed through the real AzureSessionV2 over a fake MLClient (fake_azure_v2.py). No network.

AMLOCAL_UPDATE_GOLDEN=1 rewrites the golden file (then review the diff).
"""

import json
import os
from pathlib import Path

import pytest
import yaml

pytest.importorskip("azure.ai.ml")

from click.testing import CliRunner  # noqa: E402

from amlocal.backends.azure import deploy_v2  # noqa: E402
from amlocal.cli.main import cli  # noqa: E402
from conftest import write_script  # noqa: E402
from fake_azure_v2 import azure_v2  # noqa: E402,F401 (a fixture)

pytestmark = pytest.mark.filterwarnings("ignore:The `context` parameter is deprecated")

GOLDEN = Path(__file__).parent / "golden" / "azure_v2"
AUTH_AND_LIMITS = ("--model", "mnist:3", "--entry-script", "score.py", "--auth",
                   "--cpu-cores", "1.5", "--memory-gb", "2", "--tag", "team=vision",
                   "--description", "MNIST digits", "--env", "SCALE=255", "--pip", "pillow")


@pytest.fixture
def app(tmp_path):
    return write_script(tmp_path / "app", "score.py",
                        "import json\n\ndef init():\n    pass\n\n"
                        "def run(raw):\n    return json.loads(raw)\n")


def deploy(*args):
    return CliRunner().invoke(cli, ["services", "deploy", *[str(arg) for arg in args],
                                    "--backend", "azure", "--sdk", "v2"],
                              catch_exceptions=False)


def test_a_deployment_is_an_endpoint_and_its_deployment_as_in_its_golden_file(
        app, tmp_path, monkeypatch, amlocal_home):
    monkeypatch.chdir(tmp_path)
    result = deploy("mnist-svc", *AUTH_AND_LIMITS, "--source-dir", app, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(json.dumps(json.loads(result.stdout)).replace(
        str(tmp_path.resolve()), "<root>").replace(f"azure-ai-ml {deploy_v2.SDK_VERSION} ",
                                                   "azure-ai-ml <version> "))
    golden_file = GOLDEN / "deploy_auth_limits.yaml"
    if os.environ.get("AMLOCAL_UPDATE_GOLDEN"):
        golden_file.write_text(yaml.safe_dump(document, sort_keys=True, width=1 << 16))
    expected = yaml.safe_load(golden_file.read_text())
    for field in sorted(set(expected["deployment"]) | set(document["deployment"])):
        assert document["deployment"].get(field) == expected["deployment"].get(field), field
    assert document == expected

    endpoint, deployment = document["endpoint"], document["deployment"]
    assert endpoint["name"] == "mnist-svc" and endpoint["auth_mode"] == "key"
    assert endpoint["tags"] == {"team": "vision"} and endpoint["description"] == "MNIST digits"
    assert deployment["model"] == "azureml:mnist:3"
    assert deployment["code_configuration"] == {"code": "<root>/app", "scoring_script": "score.py"}
    assert deployment["instance_type"] == "Standard_DS2_v2"  # holds 1.5 cores and 2 GB
    assert deployment["environment_variables"] == {"SCALE": "255"}
    assert deployment["environment"]["inference_config"]["scoring_route"] == {
        "port": 5001, "path": "/score"}
    dockerfile = document["environment"]["dockerfile"]
    assert "pillow" in dockerfile and deploy_v2.INFERENCE_SERVER in dockerfile
    assert dockerfile.rstrip().endswith('CMD ["azmlinfsrv", "--port", "5001"]')


def test_the_text_dry_run_shows_both_entities(app, tmp_path, monkeypatch, amlocal_home):
    monkeypatch.chdir(tmp_path)
    result = deploy("mnist-svc", "--model", "mnist", "--entry-script", "score.py",
                    "--source-dir", app, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Managed online endpoint, as azure-ai-ml serializes it:" in result.stdout
    assert "model: azureml:mnist@latest" in result.stdout
    assert "always asks for a key" in result.stdout  # no --auth: ACI would be open


def test_two_models_are_refused_with_what_to_do_instead(app, tmp_path, monkeypatch,
                                                        amlocal_home):
    monkeypatch.chdir(tmp_path)
    result = deploy("digits-two", "--model", "mnist:1", "--model", "labels", "--entry-script",
                    "score.py", "--source-dir", app, "--dry-run")
    assert result.exit_code == 2
    assert "serves one model, not 2" in result.stderr and "--sdk v1" in result.stderr


def test_sizes_are_the_smallest_that_hold_the_request():
    assert deploy_v2.instance_type() == deploy_v2.DEFAULT_INSTANCE_TYPE
    assert deploy_v2.instance_type(cpu_cores=3) == "Standard_DS3_v2"
    assert deploy_v2.instance_type(memory_gb=20) == "Standard_DS4_v2"
    with pytest.raises(deploy_v2.TranslationError, match="no managed online endpoint size"):
        deploy_v2.instance_type(cpu_cores=64)


def test_deploying_creates_the_endpoint_then_the_deployment_with_all_traffic(app, azure_v2,
                                                                            amlocal_home):
    result = deploy("mnist-svc", *AUTH_AND_LIMITS, "--source-dir", app, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scoring_uri"] == "https://mnist-svc.inference.ml/score"
    assert azure_v2.endpoints["mnist-svc"]["traffic"] == {"amlocal": 100}
    sent = azure_v2.deployments["amlocal"]
    assert sent["model"] == "azureml:mnist:3" and sent["endpoint_name"] == "mnist-svc"
