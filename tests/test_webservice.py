"""Web services through the SDK v1 shape (amlocal.core.model / amlocal.core.webservice), on the
real Docker engine: a Chainer MNIST model registered, deployed with trainer/score.py, scored."""

import concurrent.futures
import json
import os
import socket

import pytest
import requests

from conftest import TRAINER_DIR, write_script
from service_fixtures import (accuracy, containers_of, model_home, register,  # noqa: F401
                              test_digits, trained_model)

from amlocal.core.environment import Environment
from amlocal.core.model import InferenceConfig, Model
from amlocal.core.webservice import (AciWebservice, AksWebservice, LocalWebservice, Webservice,
                                     WebserviceException)
from amlocal.core.workspace import Workspace
from amlocal.model_errors import UserErrorException

pytestmark = pytest.mark.docker

FAILING_INIT = """
def init():
    raise RuntimeError("the model file is not where init() looks")

def run(raw_data):
    return raw_data
"""

ECHO_ENVIRONMENT = """
import json, os

def init():
    pass

def run(raw_data):
    model_dir = os.environ["AZUREML_MODEL_DIR"]
    try:
        open(os.path.join(model_dir, "written-by-score.txt"), "w")
        writable = True
    except OSError:
        writable = False
    return {"model_dir": model_dir, "files": sorted(os.listdir(model_dir)),
            "model_dir_writable": writable, "version": "%s"}
"""


def mnist_config():
    return InferenceConfig(entry_script="score.py", source_directory=str(TRAINER_DIR))


def digits_request(images):
    return json.dumps({"data": images})


def test_an_aci_service_with_auth_scores_test_digits_and_needs_its_key(model_home, test_digits):
    images, labels = test_digits
    ws = Workspace.from_config()
    model = Model(ws, "mnist")
    service = Model.deploy(ws, "mnist-aci", [model], mnist_config(),
                           AciWebservice.deploy_configuration(cpu_cores=1, memory_gb=1,
                                                              auth_enabled=True))
    service.wait_for_deployment(show_output=True)

    assert isinstance(service, AciWebservice) and service.state == "Healthy"
    assert service.scoring_uri.startswith("http://127.0.0.1:")
    assert requests.post(service.scoring_uri, data=digits_request(images)).status_code == 401
    primary, secondary = service.get_keys()
    answered = requests.post(service.scoring_uri, data=digits_request(images),
                             headers={"Authorization": f"Bearer {primary}"})
    assert answered.status_code == 200
    assert accuracy(answered.json(), labels) >= 0.8
    assert service.run(digits_request(images)) == answered.json()
    assert requests.post(service.scoring_uri, data="{}",
                         headers={"Authorization": f"Bearer {secondary}"}).status_code == 200
    assert requests.get(service.swagger_uri).status_code == 404  # score.py has no inference-schema

    service.regen_key("Primary")
    new_primary, _ = service.get_keys()
    assert new_primary != primary
    assert requests.post(service.scoring_uri, data="{}",
                         headers={"Authorization": f"Bearer {primary}"}).status_code == 401
    assert requests.post(service.scoring_uri, data="{}",
                         headers={"Authorization": f"Bearer {new_primary}"}).status_code == 200
    logs = service.get_logs()
    assert "init() completed" in logs and "POST /score" in logs
    assert isinstance(Webservice(ws, "mnist-aci"), AciWebservice)
    with pytest.raises(WebserviceException, match="Primary or Secondary"):
        service.regen_key("Tertiary")


def test_a_failing_init_is_failed_with_its_traceback_in_the_logs(model_home, tmp_path):
    source = write_script(tmp_path / "app", "score.py", FAILING_INIT)
    ws = Workspace.from_config()
    service = Model.deploy(ws, "broken", [Model(ws, "mnist")],
                           InferenceConfig(entry_script="score.py", source_directory=str(source)),
                           LocalWebservice.deploy_configuration())

    with pytest.raises(WebserviceException, match="terminal state.*Failed"):
        service.wait_for_deployment(timeout_sec=120)

    assert service.state == "Failed"
    assert "init() failed" in service.error
    logs = service.get_logs()
    assert "Traceback (most recent call last)" in logs
    assert "RuntimeError: the model file is not where init() looks" in logs
    with pytest.raises(WebserviceException, match="Received bad response"):
        service.run("{}")  # the relay answers 502 for a server that is not there


def test_a_local_service_reloads_a_changed_entry_script_without_a_rebuild(model_home, tmp_path):
    source = write_script(tmp_path / "app", "score.py", ECHO_ENVIRONMENT % "one")
    ws = Workspace.from_config()
    service = Model.deploy(ws, "reloading", [Model(ws, "mnist")],
                           InferenceConfig(entry_script="score.py", source_directory=str(source)),
                           LocalWebservice.deploy_configuration())
    service.wait_for_deployment()
    image, port = service.image_id, service.port
    assert service.run("{}")["version"] == "one"

    write_script(source, "score.py", ECHO_ENVIRONMENT % "two")
    assert service.run("{}")["version"] == "one"  # the service runs its own copy
    service.reload(wait=True)

    assert service.run("{}")["version"] == "two"
    assert (service.image_id, service.port) == (image, port)
    with pytest.raises(NotImplementedError, match="auth keys"):
        service.get_keys()


def test_azureml_model_dir_is_set_as_azure_sets_it_and_models_are_read_only(model_home, tmp_path,
                                                                          trained_model):
    source = write_script(tmp_path / "app", "score.py", ECHO_ENVIRONMENT % "one")
    ws = Workspace.from_config()
    register(model_home, "other", trained_model)
    config = InferenceConfig(entry_script="score.py", source_directory=str(source))
    one = Model.deploy(ws, "one-model", [Model(ws, "mnist")], config,
                       LocalWebservice.deploy_configuration())
    two = Model.deploy(ws, "two-models", [Model(ws, "mnist"), Model(ws, "other")], config,
                       LocalWebservice.deploy_configuration())
    one.wait_for_deployment()
    two.wait_for_deployment()

    single = one.run("{}")
    assert single["model_dir"] == "/var/azureml-app/azureml-models/mnist/1"
    assert single["files"] == ["model.npz"]
    assert single["model_dir_writable"] is False
    several = two.run("{}")
    assert several["model_dir"] == "/var/azureml-app/azureml-models"
    assert several["files"] == ["mnist", "other"]


def test_the_scoring_container_has_no_network_and_the_port_is_on_loopback_only(
        model_home, tmp_path, docker_client):
    source = write_script(tmp_path / "app", "score.py", ECHO_ENVIRONMENT % "one")
    ws = Workspace.from_config()
    service = Model.deploy(ws, "confined", [Model(ws, "mnist")],
                           InferenceConfig(entry_script="score.py", source_directory=str(source)),
                           AciWebservice.deploy_configuration(cpu_cores=0.5, memory_gb=0.75))
    service.wait_for_deployment()

    roles = {container.labels["amlocal.service_role"]: container.attrs
             for container in containers_of(docker_client, model_home)}
    scorer, relay = roles["scorer"], roles["relay"]
    assert scorer["HostConfig"]["NetworkMode"] == "none"
    assert scorer["HostConfig"]["NanoCpus"] == 500_000_000
    assert scorer["HostConfig"]["Memory"] == int(0.75 * 2**30)
    published = relay["NetworkSettings"]["Ports"]["5001/tcp"]
    assert [binding["HostIp"] for binding in published] == ["127.0.0.1"]
    assert int(published[0]["HostPort"]) == service.port


def test_a_dead_scoring_container_is_reported_unhealthy(model_home, tmp_path, docker_client):
    source = write_script(tmp_path / "app", "score.py", ECHO_ENVIRONMENT % "one")
    ws = Workspace.from_config()
    service = Model.deploy(ws, "doomed", [Model(ws, "mnist")],
                           InferenceConfig(entry_script="score.py", source_directory=str(source)),
                           LocalWebservice.deploy_configuration())
    service.wait_for_deployment()
    scorer = next(container for container in containers_of(docker_client, model_home)
                  if container.labels["amlocal.service_role"] == "scorer")

    scorer.kill()
    scorer.wait(timeout=30)

    assert Webservice(ws, "doomed").state == "Unhealthy"
    assert "exit code 137" in service.error
    scorer.remove(force=True)
    assert service.state == "Unhealthy" and "gone" in service.error


def test_services_are_listed_by_kind_and_delete_leaves_no_container(model_home, tmp_path,
                                                                    docker_client):
    source = write_script(tmp_path / "app", "score.py", ECHO_ENVIRONMENT % "one")
    ws = Workspace.from_config()
    config = InferenceConfig(entry_script="score.py", source_directory=str(source))
    local = Model.deploy(ws, "listed-local", [Model(ws, "mnist")], config,
                         LocalWebservice.deploy_configuration())
    aks = Model.deploy(ws, "listed-aks", [Model(ws, "mnist")], config,
                       AksWebservice.deploy_configuration(tags={"team": "digits"}))
    local.wait_for_deployment()
    aks.wait_for_deployment()

    listed = {service.name: type(service) for service in Webservice.list(ws)}
    assert listed == {"listed-local": LocalWebservice, "listed-aks": AksWebservice}
    assert [s.name for s in Webservice.list(ws, compute_type="AKS")] == ["listed-aks"]
    assert [s.name for s in Webservice.list(ws, tags=[["team", "digits"]])] == ["listed-aks"]
    assert sorted(ws.webservices) == ["listed-aks", "listed-local"]
    assert list(ws.models) == ["mnist"]
    assert aks.auth_enabled  # AKS turns keys on unless told otherwise
    assert requests.post(aks.scoring_uri, data="{}").status_code == 401
    assert len(containers_of(docker_client, model_home)) == 4

    local.delete()
    aks.delete()

    assert containers_of(docker_client, model_home) == []
    assert Webservice.list(ws) == []
    with pytest.raises(WebserviceException, match="WebserviceNotFound"):
        Webservice(ws, "listed-aks")


def test_overwrite_replaces_a_service_and_without_it_the_name_is_refused(model_home, tmp_path,
                                                                       docker_client):
    source = write_script(tmp_path / "app", "score.py", ECHO_ENVIRONMENT % "one")
    ws = Workspace.from_config()
    config = InferenceConfig(entry_script="score.py", source_directory=str(source))
    Model.deploy(ws, "twice", [Model(ws, "mnist")], config, LocalWebservice.deploy_configuration())

    with pytest.raises(WebserviceException, match="already exists"):
        Model.deploy(ws, "twice", [Model(ws, "mnist")], config,
                     LocalWebservice.deploy_configuration())
    write_script(source, "score.py", ECHO_ENVIRONMENT % "two")
    service = Model.deploy(ws, "twice", [Model(ws, "mnist")], config,
                           LocalWebservice.deploy_configuration(), overwrite=True)
    service.wait_for_deployment()

    assert service.run("{}")["version"] == "two"
    assert len(containers_of(docker_client, model_home)) == 2


def test_update_swaps_the_entry_script_of_an_aci_service(model_home, tmp_path):
    source = write_script(tmp_path / "app", "score.py", ECHO_ENVIRONMENT % "one")
    write_script(source, "score2.py", ECHO_ENVIRONMENT % "updated")
    ws = Workspace.from_config()
    service = Model.deploy(ws, "updated", [Model(ws, "mnist")],
                           InferenceConfig(entry_script="score.py", source_directory=str(source)),
                           AciWebservice.deploy_configuration(auth_enabled=True))
    service.wait_for_deployment()
    keys = service.get_keys()

    service.update(inference_config=InferenceConfig(entry_script="score2.py",
                                                    source_directory=str(source)),
                   description="second script")
    service.wait_for_deployment()

    assert service.run("{}")["version"] == "updated"
    assert service.get_keys() == keys and service.description == "second script"


@pytest.mark.parametrize("deploy, message", [
    (lambda ws, config: Model.deploy(ws, "Bad_Name", [Model(ws, "mnist")], config,
                                     LocalWebservice.deploy_configuration()),
     "invalid service name"),
    (lambda ws, config: Model.deploy(
        ws, "no-script", [Model(ws, "mnist")],
        InferenceConfig(entry_script="missing.py", source_directory=str(TRAINER_DIR)),
        LocalWebservice.deploy_configuration()),
     "is not a file"),
    (lambda ws, config: Model.deploy(
        ws, "outside", [Model(ws, "mnist")],
        InferenceConfig(entry_script="../conftest.py", source_directory=str(TRAINER_DIR)),
        LocalWebservice.deploy_configuration()),
     "not inside the source folder"),
    (lambda ws, config: Model.deploy(ws, "no-models", [], config), "registered models"),
    (lambda ws, config: Model.deploy(ws, "no-config", [Model(ws, "mnist")], None),
     "inference_config"),
], ids=["name", "missing-script", "script-outside", "no-models", "no-config"])
def test_bad_deployments_are_refused_in_one_line_and_leave_nothing(model_home, docker_client,
                                                                   deploy, message):
    ws = Workspace.from_config()
    with pytest.raises(WebserviceException, match=message) as raised:
        deploy(ws, mnist_config())
    assert "\n" not in str(raised.value)
    assert Webservice.list(ws) == [] and containers_of(docker_client, model_home) == []


def test_deployment_configurations_refuse_what_amlocal_cannot_emulate():
    with pytest.raises(UserErrorException, match="ssl_enabled is not supported"):
        AciWebservice.deploy_configuration(ssl_enabled=True)
    with pytest.raises(WebserviceException, match="port must be an integer"):
        LocalWebservice.deploy_configuration(port=70000)
    with pytest.raises(WebserviceException, match="cpu_cores must be a number above 0"):
        AciWebservice.deploy_configuration(cpu_cores=0)
    with pytest.raises(UserErrorException, match="conda_file"):
        InferenceConfig(entry_script="score.py", conda_file="env.yml")
    environment = Environment("scoring")
    config = InferenceConfig(entry_script="score.py", environment=environment)
    assert config._environment_spec().recipe == "python"
    assert AksWebservice.deploy_configuration().auth_enabled is True
    assert AciWebservice.deploy_configuration().auth_enabled is False


SCHEMA_SCORE = """
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

def init():
    pass

@input_schema("data", StandardPythonParameterType([[1.0, 2.0]]))
@output_schema(StandardPythonParameterType([3.0]))
def run(data):
    return [sum(row) for row in data]
"""


def test_an_environment_with_inference_schema_serves_swagger_and_keyword_arguments(model_home,
                                                                                 tmp_path):
    source = write_script(tmp_path / "app", "score.py", SCHEMA_SCORE)
    environment = Environment("schema-scoring")
    environment.python.conda_dependencies.add_pip_package("inference-schema==1.8")
    ws = Workspace.from_config()
    service = Model.deploy(ws, "with-schema", [Model(ws, "mnist")],
                           InferenceConfig(entry_script="score.py", source_directory=str(source),
                                           environment=environment),
                           LocalWebservice.deploy_configuration())
    service.wait_for_deployment(timeout_sec=600)

    assert service.run(json.dumps({"data": [[1, 2], [3, 4.5]]})) == [3, 7.5]
    swagger = requests.get(service.swagger_uri)
    assert swagger.status_code == 200
    document = swagger.json()
    assert document["swagger"] == "2.0" and "/score" in document["paths"]
    assert document["definitions"]["ServiceInput"]["properties"]["data"]["type"] == "array"


def test_a_port_in_use_or_a_fifo_in_the_source_is_refused_in_one_line_and_leaves_nothing(
        model_home, tmp_path, docker_client):
    source = write_script(tmp_path / "app", "score.py", ECHO_ENVIRONMENT % "one")
    ws = Workspace.from_config()
    config = InferenceConfig(entry_script="score.py", source_directory=str(source))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(WebserviceException, match="could not start service") as raised:
            Model.deploy(ws, "port-taken", [Model(ws, "mnist")], config,
                         LocalWebservice.deploy_configuration(port=port))
    assert "\n" not in str(raised.value)
    os.mkfifo(source / "pipe")
    with pytest.raises(WebserviceException, match="FIFO"):
        Model.deploy(ws, "fifo", [Model(ws, "mnist")], config,
                     LocalWebservice.deploy_configuration())

    assert Webservice.list(ws) == [] and containers_of(docker_client, model_home) == []
    assert not (model_home / "services" / "fifo").exists()
    assert not (model_home / "services" / "port-taken").exists()


def test_concurrent_clients_all_get_answers(model_home, tmp_path):
    source = write_script(tmp_path / "app", "score.py", ECHO_ENVIRONMENT % "one")
    ws = Workspace.from_config()
    service = Model.deploy(ws, "busy", [Model(ws, "mnist")],
                           InferenceConfig(entry_script="score.py", source_directory=str(source)),
                           LocalWebservice.deploy_configuration())
    service.wait_for_deployment()

    def call(_):
        return requests.post(service.scoring_uri, data="{}", timeout=60).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(call, range(400)))

    assert statuses == [200] * 400
