"""The options that describe a run, shared by `amlocal run` and `amlocal sweep` (whose child
runs take every one of them), and the one function that makes a RunSpec of them."""

import click

from amlocal.backends import backend_names
from amlocal.backends.base import (DEFAULT_EXPERIMENT, DEFAULT_RECIPE, EXECUTORS, DistributionSpec,
                                   EnvironmentSpec, RunSpec)
from amlocal.backends.spec import DISTRIBUTIONS
from amlocal.cli.backends import DEFAULT_BACKEND
from amlocal.errors import UserInputError

_OPTIONS = [
    click.argument("source_dir", default=".", type=click.Path(file_okay=False)),
    click.option("--script", required=True, help="Entry script, relative to SOURCE_DIR."),
    click.option("--experiment", default=DEFAULT_EXPERIMENT, show_default=True,
                 help="Experiment name."),
    click.option("--executor", type=click.Choice(EXECUTORS),
                 help="Where the script runs [default: docker when an engine answers, else process]."),
    click.option("--input", "inputs", multiple=True, metavar="NAME=PATH",
                 help="Make PATH available read-only in the run; $AZUREML_DATAREFERENCE_NAME in the "
                      "script arguments becomes its in-run path. Repeatable."),
    click.option("--pip", "pip_packages", multiple=True, metavar="PKG",
                 help="Extra pip package for the run's image (docker executor). Repeatable."),
    click.option("--recipe", default=DEFAULT_RECIPE, show_default=True,
                 help="Image recipe: a folder of amlocal's docker/."),
    click.option("--base-image", help="Base image for the recipe [default: python:3.11-slim-bookworm, "
                                      "or the Debian base from `amlocal base-image build`]."),
    click.option("--compute", default="local", show_default=True,
                 help="Compute target (see `amlocal compute list`); `local` is one node, the host."),
    click.option("--node-count", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Nodes the run waits for and gets."),
    click.option("--distribution", type=click.Choice(DISTRIBUTIONS),
                 help="Start the script as a distributed job on every node: mpi (MpiConfiguration: "
                      "mpirun starts the ranks) or pytorch (PyTorchConfiguration: one launcher "
                      "per node with RANK, WORLD_SIZE, MASTER_ADDR, ...) [default: run it once]."),
    click.option("--processes-per-node", type=click.IntRange(1, 64), metavar="K",
                 help="--distribution: ranks on each node (world size: node count x K) "
                      "[default: 1]."),
    click.option("--communication-backend", type=click.Choice(["nccl", "gloo"],
                                                              case_sensitive=False),
                 help="--distribution pytorch: torch.distributed's backend [default: nccl, as "
                      "PyTorchConfiguration's]."),
    click.option("--gpu", "use_gpu", is_flag=True,
                 help="Give the run its node's GPUs (docker: the chainer-gpu image and the NVIDIA "
                      "runtime; process: the GPU CuPy sees). Refused at once where there is none."),
    click.option("--max-duration", type=click.IntRange(min=1), metavar="SECONDS",
                 help="Cancel the run if it runs longer (max_run_duration_seconds)."),
    click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Run tag. Repeatable."),
    click.option("--env", "env_vars", multiple=True, metavar="KEY=VALUE",
                 help="Set KEY=VALUE for the script. It gets none of this shell's variables "
                      "but (process executor) PATH, HOME, locale, proxy and CA settings. Repeatable."),
    click.option("--run-as-root", is_flag=True,
                 help="docker: run the script as root with Docker's default capabilities and a "
                      "writable root filesystem, not unprivileged (needs amlocal run as root)."),
    click.option("--detach", is_flag=True, help="Return once the run is submitted; it runs on."),
    click.option("--quiet-build", is_flag=True, help="Do not show image build output."),
    click.option("--json", "as_json", is_flag=True,
                 help="End with the run record (a sweep's with its children) as one JSON line."),
    click.option("--backend", "backend_name", type=click.Choice(backend_names()),
                 default=DEFAULT_BACKEND, show_default=True,
                 help="Where the run goes: this machine, or Azure ML (the `azure` extra; the "
                      "workspace is named by config.json, and --compute names an AmlCompute "
                      "cluster)."),
    click.option("--workspace-config", type=click.Path(), metavar="PATH",
                 help="--backend azure: the workspace's config.json (or a folder to search from) "
                      "[default: found from the current folder up, as azureml-core finds it]."),
    # (The choices of backends/azure/sdk_choice.py, named here: the Azure backend is not
    # imported unless it is asked for.)
    click.option("--sdk", type=click.Choice(["v1", "v2"]),
                 help="--backend azure: the Azure ML SDK that sends the run: v1 (azureml-core, "
                      "the `azure` extra: ScriptRunConfig, HyperDrive) or v2 (azure-ai-ml, the "
                      "`azure-v2` extra: command and sweep jobs) [default: $AMLOCAL_AZURE_SDK, else "
                      "`sdk` in amlocal.toml's [azure] table, else v1]."),
    click.option("--dry-run", is_flag=True,
                 help="--backend azure: print what would be submitted (run configuration, "
                      "Dockerfile, compute, uploads; a sweep's HyperDrive configuration) and send "
                      "nothing."),
]

# The names the options above give the command function, which run_spec reads.
SPEC_OPTION_NAMES = ("source_dir", "script", "experiment", "executor", "inputs", "pip_packages",
                     "recipe", "base_image", "compute", "node_count", "distribution",
                     "processes_per_node", "communication_backend", "use_gpu", "max_duration",
                     "tags", "env_vars", "run_as_root")


def spec_options(command):
    """Decorate a click command with every option of a run (see _OPTIONS), in --help's order."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def parse_inputs(values):
    """NAME=PATH pairs from repeated --input options."""
    inputs = {}
    for value in values:
        name, separator, path = value.partition("=")
        if not separator or not name or not path:
            raise UserInputError(f"--input expects NAME=PATH, got {value!r}")
        if name in inputs:
            raise UserInputError(f"input {name!r} given twice")
        inputs[name] = path
    return inputs


def parse_key_values(values, option):
    """{KEY: VALUE} from repeated KEY=VALUE options (tags, properties)."""
    pairs = {}
    for value in values:
        key, separator, text = value.partition("=")
        if not separator or not key:
            raise UserInputError(f"{option} expects KEY=VALUE, got {value!r}")
        pairs[key] = text
    return pairs


def parse_distribution(options):
    """The DistributionSpec of --distribution and its two options, or None without it."""
    if options["distribution"] is None:
        for name, option in (("processes_per_node", "--processes-per-node"),
                             ("communication_backend", "--communication-backend")):
            if options[name] is not None:
                raise UserInputError(f"{option} needs --distribution mpi or pytorch")
        return None
    if options["communication_backend"] is not None and options["distribution"] != "pytorch":
        raise UserInputError("--communication-backend is a PyTorch setting: use it with "
                             "--distribution pytorch")
    return DistributionSpec(kind=options["distribution"],
                            process_count_per_node=options["processes_per_node"] or 1,
                            communication_backend=options["communication_backend"]).validated()


def run_spec(options, script_args):
    """The RunSpec that the spec options (the command's keyword arguments) describe."""
    return RunSpec(
        source_dir=options["source_dir"], script=options["script"], arguments=tuple(script_args),
        experiment=options["experiment"], inputs=parse_inputs(options["inputs"]),
        executor=options["executor"], tags=parse_key_values(options["tags"], "--tag"),
        compute=options["compute"], node_count=options["node_count"],
        distribution=parse_distribution(options), max_run_duration_seconds=options["max_duration"], use_gpu=options["use_gpu"],
        environment_variables=parse_key_values(options["env_vars"], "--env"),
        run_as_root=options["run_as_root"],
        environment=EnvironmentSpec(recipe=options["recipe"],
                                    pip_packages=tuple(options["pip_packages"]),
                                    base_image=options["base_image"]),
    )
