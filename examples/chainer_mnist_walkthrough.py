"""The Azure ML how-to "Train and register Chainer models at scale", run on amlocal.

This is the how-to's code with its import lines changed from `azureml` to `amlocal`, and MNIST
passed to the trainer as a named input (the how-to's trainer downloaded it itself; amlocal's runs
have no network). Run it from the repository's root:

    AMLOCAL_ALLOW_OVERCOMMIT=1 AMLOCAL_EMULATE_GPUS=1 \\
        .venv/bin/python examples/chainer_mnist_walkthrough.py --data-dir data/mnist

The how-to asks for four STANDARD_NC6 GPU nodes; the two variables let a smaller machine without
a GPU stand in for that cluster (its "GPU" work then runs on the CPU). `--no-docker` runs the
trainer as a local process instead of in a container (the estimator's use_docker=False).
"""

import argparse
import os
import shutil

# Check core SDK version number
import amlocal.core
from amlocal.core import Experiment, Workspace
from amlocal.core.compute import AmlCompute, ComputeTarget
from amlocal.core.compute_target import ComputeTargetException
from amlocal.train.dnn import Chainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data-dir", required=True, help="folder with the four MNIST IDX .gz files")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--no-docker", action="store_true", help="run the trainer as a local process")
args = parser.parse_args()

print("SDK version:", amlocal.core.VERSION)

ws = Workspace.from_config()

project_folder = './chainer-mnist'
os.makedirs(project_folder, exist_ok=True)

# The how-to copies its one training script; amlocal's trainer is a few modules beside it.
shutil.copytree(os.path.join(REPO, 'trainer'), project_folder, dirs_exist_ok=True,
                ignore=shutil.ignore_patterns('__pycache__'))

experiment_name = 'chainer-mnist'
experiment = Experiment(ws, name=experiment_name)

# choose a name for your cluster
cluster_name = "gpu-cluster"

try:
    compute_target = ComputeTarget(workspace=ws, name=cluster_name)
    print('Found existing compute target.')
except ComputeTargetException:
    print('Creating a new compute target...')
    compute_config = AmlCompute.provisioning_configuration(vm_size='STANDARD_NC6',
                                                           max_nodes=4)

    # create the cluster
    compute_target = ComputeTarget.create(ws, cluster_name, compute_config)

    compute_target.wait_for_completion(show_output=True)

# use get_status() to get a detailed status for the current cluster.
print(compute_target.get_status().serialize())

# MNIST as a named input: uploaded to the workspace's datastore, mounted read-only in the run.
ds = ws.get_default_datastore()
ds.upload(src_dir=args.data_dir, target_path='mnist', overwrite=True, show_progress=False)

script_params = {
    '--epochs': args.epochs,
    '--batchsize': 128,
    '--output_dir': './outputs',
    '--data-dir': ds.path('mnist').as_mount(),
}

estimator = Chainer(source_directory=project_folder,
                    script_params=script_params,
                    compute_target=compute_target,
                    pip_packages=['numpy', 'pytest'],
                    entry_script='chainer_mnist.py',
                    use_gpu=True,
                    use_docker=not args.no_docker)

exp = experiment
run = exp.submit(estimator)
run.wait_for_completion(show_output=True)

model = run.register_model(model_name='chainer-dnn-mnist', model_path='outputs/model.npz')
print("Registered model", model.name, "version", model.version)

# Create a model folder in the current directory
os.makedirs('./model', exist_ok=True)

for f in run.get_file_names():
    if f.startswith('outputs/model'):
        output_file_path = os.path.join('./model', f.split('/')[-1])
        print('Downloading from {} to {} ...'.format(f, output_file_path))
        run.download_file(name=f, output_file_path=output_file_path)
