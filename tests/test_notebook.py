"""Issue 13's done-when test: the Azure notebook train-hyperparameter-tune-deploy-with-chainer, cell
by cell as a user runs it top to bottom, with `azureml` changed to `amlocal` in the imports.

What differs from the notebook, and why: a CPU cluster size and 1 epoch (CI has no GPU and little
time); MNIST uploaded to the datastore from tests/data/mnist-10k and passed as a datastore
reference (runs have no network); amlocal's own trainer/chainer_mnist.py and score.py; the conda
file lists pip packages only (the images have no conda); a 2-run sweep. Everything runs on the
real Docker engine, in the cached Chainer image.
"""

import json
import os
import shutil

import pytest
import requests

from conftest import MNIST_DIR, TRAINER_DIR, write_script
from service_fixtures import accuracy, containers_of, remove_containers_of, test_digits  # noqa: F401

pytestmark = pytest.mark.docker

# The notebook's conda file, less what cannot be here: chainer 7.8.1 (its last release) instead
# of 5.1.0, no cupy (no GPU) and no packages the trainer does not import (each would be a build).
CONDA_FILE = """\
channels:
- conda-forge
dependencies:
- python=3.6.2
- pip=21.3.1
- pip:
  - chainer==7.8.1
"""


@pytest.fixture
def notebook_folder(amlocal_home, docker_client, tmp_path, monkeypatch):
    """The notebook's folder (the current one, as in Jupyter); the services' containers are removed
    when the test ends, whatever happened."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conda_dependencies.yml").write_text(CONDA_FILE)
    yield tmp_path
    remove_containers_of(docker_client, amlocal_home)


def test_the_chainer_notebook_trains_sweeps_registers_and_deploys(notebook_folder, amlocal_home,
                                                                  docker_client, test_digits,
                                                                  capsys):
    # -- Check core SDK version number; initialize the workspace --------------------------------
    import amlocal.core
    from amlocal.core.workspace import Workspace

    print("SDK version:", amlocal.core.VERSION)
    ws = Workspace.from_config()
    print('Workspace name: ' + ws.name,
          'Azure region: ' + ws.location,
          'Subscription id: ' + ws.subscription_id,
          'Resource group: ' + ws.resource_group, sep='\n')

    # -- Diagnostics --------------------------------------------------------------------------------
    from amlocal.telemetry import set_diagnostics_collection

    set_diagnostics_collection(send_diagnostics=True)

    # -- Create or attach an existing AmlCompute ---------------------------------------------------
    from amlocal.core.compute import AmlCompute, ComputeTarget
    from amlocal.core.compute_target import ComputeTargetException

    cluster_name = "cpu-cluster"
    try:
        compute_target = ComputeTarget(workspace=ws, name=cluster_name)
        print('Found existing compute target.')
    except ComputeTargetException:
        print('Creating a new compute target...')
        compute_config = AmlCompute.provisioning_configuration(vm_size='STANDARD_D1_V2',
                                                               max_nodes=2)
        compute_target = ComputeTarget.create(ws, cluster_name, compute_config)
        compute_target.wait_for_completion(show_output=True, min_node_count=None,
                                           timeout_in_minutes=20)
    print(compute_target.get_status().serialize())

    # -- The data: MNIST uploaded to the workspace's datastore ---------------------------------------
    ds = ws.get_default_datastore()
    ds.upload(src_dir=str(MNIST_DIR), target_path='mnist', overwrite=True, show_progress=True)

    # -- Create a project directory, an experiment, an environment -------------------------------------
    project_folder = './chainer-mnist'
    os.makedirs(project_folder, exist_ok=True)
    for name in ("chainer_mnist.py", "chainer_compat.py", "fast_loop.py", "score.py"):
        shutil.copy(TRAINER_DIR / name, project_folder)

    from amlocal.core import Environment, Experiment
    from amlocal.core.runconfig import DockerConfiguration

    experiment = Experiment(ws, name='chainer-mnist')
    chainer_env = Environment.from_conda_specification(name='chainer-7.8.1-cpu',
                                                       file_path='./conda_dependencies.yml')
    chainer_env.docker.base_image = 'mcr.microsoft.com/azureml/openmpi3.1.2-ubuntu18.04'
    docker_config = DockerConfiguration(use_docker=True)

    # -- Configure and submit the training run ------------------------------------------------------
    from amlocal.core import ScriptRunConfig

    src = ScriptRunConfig(source_directory=project_folder, script='chainer_mnist.py',
                          arguments=['--epochs', 1, '--batchsize', 100, '--output_dir',
                                     './outputs', '--data-dir', ds.path('mnist').as_mount()],
                          compute_target=compute_target, environment=chainer_env,
                          docker_runtime_config=docker_config)
    run = experiment.submit(src)

    from amlocal.widgets import RunDetails

    RunDetails(run).show()
    print(run.get_details())
    run.wait_for_completion(show_output=True)
    assert run.get_status() == "Completed"
    assert run.get_metrics()["Accuracy"] > 0.5

    # -- Tune the hyperparameters with HyperDrive -----------------------------------------------------
    from amlocal.train.hyperdrive.parameter_expressions import choice
    from amlocal.train.hyperdrive.policy import BanditPolicy
    from amlocal.train.hyperdrive.run import PrimaryMetricGoal
    from amlocal.train.hyperdrive.runconfig import HyperDriveConfig
    from amlocal.train.hyperdrive.sampling import RandomParameterSampling

    param_sampling = RandomParameterSampling({"--batchsize": choice(100, 200)})
    early_termination_policy = BanditPolicy(evaluation_interval=1, slack_factor=0.1,
                                            delay_evaluation=3)
    hyperdrive_config = HyperDriveConfig(run_config=src,
                                         hyperparameter_sampling=param_sampling,
                                         primary_metric_name='Accuracy',
                                         policy=early_termination_policy,
                                         primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
                                         max_total_runs=2, max_concurrent_runs=2)
    hyperdrive_run = experiment.submit(hyperdrive_config)
    RunDetails(hyperdrive_run).show()
    hyperdrive_run.wait_for_completion(show_output=True)
    assert hyperdrive_run.get_status() == "Completed"
    assert len(list(hyperdrive_run.get_children())) == 2

    best_run = hyperdrive_run.get_best_run_by_primary_metric()
    arguments = best_run.get_details()['runDefinition']['arguments']
    print(arguments)
    assert arguments[arguments.index('--batchsize') + 1] in ('100', '200')
    print(best_run.get_file_names())
    model = best_run.register_model(model_name='chainer-dnn-mnist',
                                    model_path='outputs/model.npz')

    # -- Deploy the model as a web service: the scoring environment, the configurations --------------
    from amlocal.core.runconfig import CondaDependencies

    cd = CondaDependencies.create()
    cd.add_pip_package('chainer==7.8.1')
    cd.save_to_file(base_directory='./', conda_file_path='myenv.yml')
    print(cd.serialize_to_string())

    from amlocal.core.model import InferenceConfig, Model
    from amlocal.core.webservice import AciWebservice, LocalWebservice, Webservice

    myenv = Environment.from_conda_specification(name="myenv", file_path="myenv.yml")
    inference_config = InferenceConfig(entry_script="score.py", environment=myenv,
                                       source_directory=project_folder)
    aciconfig = AciWebservice.deploy_configuration(cpu_cores=1, memory_gb=1, auth_enabled=True,
                                                   tags={'name': 'mnist', 'framework': 'Chainer'},
                                                   description='Chainer DNN with MNIST')
    service = Model.deploy(workspace=ws, name='chainer-mnist-1', models=[model],
                           inference_config=inference_config, deployment_config=aciconfig)
    service.wait_for_deployment(True)
    print(service.state)
    print(service.scoring_uri)
    assert service.state == "Healthy"

    # -- Test the deployed model: the right digits with the key, 401 without it -----------------------
    X_test, y_test = test_digits
    test_samples = bytes(json.dumps({"data": X_test}), encoding='utf8')
    result = service.run(input_data=test_samples)
    assert accuracy(result, y_test) >= 0.75  # 1 epoch: about 84% of the test digits
    key, _ = service.get_keys()
    headers = {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + key}
    answered = requests.post(service.scoring_uri, data=test_samples, headers=headers)
    assert answered.status_code == 200 and answered.json() == result
    assert requests.post(service.scoring_uri, data=test_samples,
                         headers={'Content-Type': 'application/json'}).status_code == 401
    logs = service.get_logs()
    print(logs)
    assert "init() completed" in logs and "POST /score" in logs

    # -- A LocalWebservice beside it, to debug the scoring script -------------------------------------
    local_service = Model.deploy(ws, 'chainer-mnist-local', [model], inference_config,
                                 LocalWebservice.deploy_configuration())
    local_service.wait_for_deployment()
    image, port = local_service.image_id, local_service.port
    with open(os.path.join(project_folder, "score.py"), "a") as score_script:
        score_script.write("\nprint('score.py reloaded')\n")
    local_service.reload(wait=True)
    assert local_service.state == "Healthy"
    assert (local_service.image_id, local_service.port) == (image, port)  # no rebuild, same URI
    assert local_service.run(input_data=test_samples) == result
    assert "score.py reloaded" in local_service.get_logs()

    # -- What the workspace has now -----------------------------------------------------------------
    models = ws.models
    for name, m in models.items():
        print("Name:", name, "\tVersion:", m.version, "\tDescription:", m.description, m.tags)
    webservices = ws.webservices
    for name, webservice in webservices.items():
        print("Name:", name, "\tDescription:", webservice.description, webservice.tags)
    print("Model: {}, ID: {}".format('chainer-dnn-mnist', ws.models['chainer-dnn-mnist'].id))
    webservice = ws.webservices['chainer-mnist-1']
    print("Webservice: {}, scoring URI: {}".format('chainer-mnist-1', webservice.scoring_uri))
    assert ws.models['chainer-dnn-mnist'].id == model.id == 'chainer-dnn-mnist:1'
    assert isinstance(webservice, AciWebservice) and webservice.scoring_uri == service.scoring_uri
    assert isinstance(ws.webservices['chainer-mnist-local'], LocalWebservice)
    listed = {webservice.name: webservice.compute_type for webservice in Webservice.list(ws)}
    assert listed == {'chainer-mnist-1': 'ACI', 'chainer-mnist-local': 'Local'}

    # -- Clean up -------------------------------------------------------------------------------------
    service.delete()
    local_service.delete()
    assert Webservice.list(ws) == [] and containers_of(docker_client, amlocal_home) == []

    printed = capsys.readouterr().out
    assert "Azure region: local" in printed and "Healthy" in printed
    assert "Run {} (experiment chainer-mnist)".format(run.id) in printed


def test_the_notebooks_conda_file_gives_an_environment_where_chainer_imports(notebook_folder,
                                                                            tmp_path):
    # The official sample's scripts `import chainer` with no shim: Chainer 7.8.1 as released needs
    # NumPy < 2, which a plain `pip install chainer==7.8.1` does not give.
    from amlocal.core import Environment, Experiment, ScriptRunConfig, Workspace

    source = write_script(tmp_path / "src", "train.py",
                          "import chainer, numpy\nprint('chainer', chainer.__version__, "
                          "'numpy', numpy.__version__)\n")
    env = Environment.from_conda_specification("chainer-5.1.0-gpu", "conda_dependencies.yml")
    run = Experiment(Workspace.from_config(), "chainer-env").submit(
        ScriptRunConfig(source_directory=str(source), script="train.py", environment=env))
    run.wait_for_completion()

    with run._handle.open_file("azureml-logs/70_driver_log.txt") as handle:
        driver_log = handle.read().decode()
    assert run.get_status() == "Completed", driver_log[-2000:]
    assert "chainer 7.8.1 numpy 1." in driver_log
    with run._handle.open_file("azureml-logs/20_image_build_log.txt") as handle:
        assert "built on amlocal's chainer recipe" in handle.read().decode()
