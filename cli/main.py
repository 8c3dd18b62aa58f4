"""`amlocal`: the command line. Parses and renders; the work is done by amlocal.backends.

Exit codes: 0 success (a run Completed), 1 a run Failed or was Canceled (or another error),
2 bad input, 3 the Docker engine does not answer, 4 no such run or model, 5 a damaged record or
file, 124 `runs wait --timeout` ran out.
"""

import signal

import click

import amlocal
from amlocal.backends import get_backend
from amlocal.backends.base import DEFAULT_EXPERIMENT, DEFAULT_RECIPE, EXECUTORS, EnvironmentSpec, RunSpec
from amlocal.cli.render import EventPrinter, echo_json, echo_status, summary_line
from amlocal.errors import AmlocalError, UserInputError
from amlocal.validation import one_line


class AmlocalGroup(click.Group):
    """Turns amlocal's errors into one-line messages and their exit codes, in one place."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AmlocalError as error:
            click.echo(f"Error: {one_line(str(error))}", err=True)
            ctx.exit(error.exit_code)
        except click.UsageError as error:
            # A bad option value is bad input like any other: one line (click's own is a usage
            # block), naming where help is, with the usual exit code 2.
            where = error.ctx.command_path if error.ctx else ctx.command_path
            click.echo(f"Error: {one_line(error.format_message())} (see `{where} --help`)", err=True)
            ctx.exit(UserInputError.exit_code)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


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


@click.group(cls=AmlocalGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(amlocal.__version__, prog_name="amlocal")
def cli():
    """Azure Machine Learning (SDK v1) training runs, emulated on this machine.

    Runs go through Azure ML's stages (Preparing, Scaling, Running, PostProcessing) in Docker or
    as a local process, and land in a run history under $AMLOCAL_HOME (default ~/.amlocal).
    """


@cli.command()
@click.argument("source_dir", default=".", type=click.Path(file_okay=False))
@click.option("--script", required=True, help="Entry script, relative to SOURCE_DIR.")
@click.option("--experiment", default=DEFAULT_EXPERIMENT, show_default=True, help="Experiment name.")
@click.option("--executor", type=click.Choice(EXECUTORS),
              help="Where the script runs [default: docker when an engine answers, else process].")
@click.option("--input", "inputs", multiple=True, metavar="NAME=PATH",
              help="Make PATH available read-only in the run; $AZUREML_DATAREFERENCE_NAME in the "
                   "script arguments becomes its in-run path. Repeatable.")
@click.option("--pip", "pip_packages", multiple=True, metavar="PKG",
              help="Extra pip package for the run's image (docker executor). Repeatable.")
@click.option("--recipe", default=DEFAULT_RECIPE, show_default=True,
              help="Image recipe: a folder of amlocal's docker/.")
@click.option("--base-image", help="Base image for the recipe [default: python:3.11-slim-bookworm, "
                                   "or the Debian base from `amlocal base-image build`].")
@click.option("--compute", default="local", show_default=True,
              help="Compute target (see `amlocal compute list`); `local` is one node, the host.")
@click.option("--node-count", type=click.IntRange(min=1), default=1, show_default=True,
              help="Nodes the run waits for and gets.")
@click.option("--gpu", "use_gpu", is_flag=True,
              help="Give the run its node's GPUs (docker: the chainer-gpu image and the NVIDIA "
                   "runtime; process: the GPU CuPy sees). Refused at once where there is none.")
@click.option("--max-duration", type=click.IntRange(min=1), metavar="SECONDS",
              help="Cancel the run if it runs longer (max_run_duration_seconds).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Run tag. Repeatable.")
@click.option("--env", "env_vars", multiple=True, metavar="KEY=VALUE",
              help="Set KEY=VALUE for the script. It gets none of this shell's variables "
                   "but (process executor) PATH, HOME, locale, proxy and CA settings. Repeatable.")
@click.option("--run-as-root", is_flag=True,
              help="docker: run the script as root with Docker's default capabilities and a "
                   "writable root filesystem, not unprivileged (needs amlocal run as root).")
@click.option("--detach", is_flag=True, help="Return once the run is submitted; it runs on.")
@click.option("--quiet-build", is_flag=True, help="Do not show image build output.")
@click.option("--json", "as_json", is_flag=True, help="End with the run record as one JSON line.")
@click.option("--backend", "backend_name", type=click.Choice(["local", "azure"]), default="local",
              show_default=True,
              help="Where the run goes: this machine, or Azure ML (the `azure` extra; the "
                   "workspace is named by config.json, and --compute names an AmlCompute cluster).")
@click.option("--workspace-config", type=click.Path(), metavar="PATH",
              help="--backend azure: the workspace's config.json (or a folder to search from) "
                   "[default: found from the current folder up, as azureml-core finds it].")
@click.option("--dry-run", is_flag=True,
              help="--backend azure: print what would be submitted (run configuration, "
                   "Dockerfile, compute, uploads) and send nothing.")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
def run(source_dir, script, experiment, executor, inputs, pip_packages, recipe, base_image,
        compute, node_count, use_gpu, max_duration, tags, env_vars, run_as_root, detach, quiet_build,
        as_json, backend_name, workspace_config, dry_run, script_args):
    """Run SCRIPT from SOURCE_DIR as an Azure ML-style run; arguments after -- go to the script.

    \b
    Example:
      amlocal run trainer --script chainer_mnist.py --input mnist=./mnist \\
          -- --epochs 3 --data-dir '$AZUREML_DATAREFERENCE_mnist'
    The same run on Azure ML (see what it sends first with --dry-run):
      amlocal run trainer --script chainer_mnist.py --input mnist=./mnist \\
          --backend azure --compute gpu-cluster -- --epochs 3 \\
          --data-dir '$AZUREML_DATAREFERENCE_mnist'
    """
    tag_pairs = parse_key_values(tags, "--tag")
    spec = RunSpec(
        source_dir=source_dir, script=script, arguments=tuple(script_args), experiment=experiment,
        inputs=parse_inputs(inputs), executor=executor, tags=tag_pairs, compute=compute,
        node_count=node_count, max_run_duration_seconds=max_duration, use_gpu=use_gpu,
        environment_variables=parse_key_values(env_vars, "--env"), run_as_root=run_as_root,
        environment=EnvironmentSpec(recipe=recipe, pip_packages=tuple(pip_packages),
                                    base_image=base_image),
    )
    if dry_run and backend_name != "azure":
        raise UserInputError("--dry-run shows what would be submitted to Azure ML: use it with "
                             "--backend azure")
    if workspace_config and backend_name != "azure":
        raise UserInputError("--workspace-config names an Azure ML workspace: use it with "
                             "--backend azure")
    if backend_name == "azure":
        backend = get_backend("azure", workspace_config=workspace_config)
        if dry_run:
            from amlocal.backends.azure.backend import dry_run_text
            document = backend.dry_run(spec)
            if as_json:
                echo_json(document)
            else:
                click.echo(dry_run_text(document))
            return
    else:
        backend = get_backend("local")
    printer = EventPrinter(show_build_output=not quiet_build)
    handle = backend.submit(spec, on_event=printer, detach=detach)
    if detach:
        details = handle.get_details()
        echo_status(f"RunId: {handle.id} submitted; follow it with `amlocal runs logs {handle.id} -f`")
        if details.get("portal_url"):
            echo_status(f"Web View: {details['portal_url']}")
        if as_json:
            echo_json(details)
        else:
            click.echo(handle.id)
        return
    # `kill` (SIGTERM) of this process is a cancel, as Ctrl-C is: the run ends Canceled, never
    # orphaned in Running.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        # A local run driven here already sends its events to the printer; an Azure run's output
        # arrives while it is waited for.
        details = handle.wait(on_event=printer)
    except KeyboardInterrupt:
        echo_status(f"Canceling run {handle.id} (the script gets SIGTERM; Ctrl-C again to kill "
                    "it now) ...")
        handle.cancel()
        try:
            details = handle.wait()
        except KeyboardInterrupt:
            echo_status(f"Killing run {handle.id} ...")
            handle.cancel(force=True)
            details = handle.wait()
    echo_status(summary_line(details))
    if details["status"] != "Completed" and details.get("error"):
        echo_status(details["error"])
    if as_json:
        echo_json(details)
    if details["status"] != "Completed":
        raise click.exceptions.Exit(1)


def _register_subcommands():
    from amlocal.cli.base_image import base_image
    from amlocal.cli.compute import compute
    from amlocal.cli.datasets import datasets
    from amlocal.cli.models import models
    from amlocal.cli.runs import runs
    from amlocal.cli.sweep import sweep

    cli.add_command(runs)
    cli.add_command(sweep)
    cli.add_command(base_image)
    cli.add_command(datasets)
    cli.add_command(compute)
    cli.add_command(models)


_register_subcommands()


def main():
    cli(prog_name="amlocal")
