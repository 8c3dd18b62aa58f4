"""`amlocal`: the command line. Parses and renders; the work is done by amlocal.backends.

Exit codes: 0 success (a run Completed), 1 a run Failed or was Canceled (or another error),
2 bad input, 3 the Docker engine does not answer, 4 no such run or model, 5 a damaged record or
file, 124 `runs wait --timeout` ran out.
"""

import importlib

import click

import amlocal
from amlocal.cli.backends import backend_named
from amlocal.cli.dry_run import show_dry_run
from amlocal.cli.follow import submit_and_follow
from amlocal.cli.render import EventPrinter
from amlocal.cli.spec_options import run_spec, spec_options
from amlocal.errors import AmlocalError, UserInputError
from amlocal.validation import one_line

# The subcommands, each imported only when it is run or listed by --help, so that a command
# pays for its own imports only (`amlocal runs list` never imports the Docker SDK or matplotlib).
SUBCOMMANDS = {
    "runs": "amlocal.cli.runs:runs",
    "sweep": "amlocal.cli.sweep:sweep",
    "base-image": "amlocal.cli.base_image:base_image",
    "datasets": "amlocal.cli.datasets:datasets",
    "compute": "amlocal.cli.compute:compute",
    "models": "amlocal.cli.models:models",
    "serve": "amlocal.cli.serve:serve",
    "services": "amlocal.cli.services:services",
    "ui": "amlocal.cli.ui:ui",
}


class AmlocalGroup(click.Group):
    """Turns amlocal's errors into one-line messages and their exit codes, in one place; finds
    the subcommands of SUBCOMMANDS when they are asked for (click's lazy-loading pattern)."""

    def list_commands(self, ctx):
        return sorted([*super().list_commands(ctx), *SUBCOMMANDS])

    def get_command(self, ctx, name):
        if name in SUBCOMMANDS:
            module_name, attribute = SUBCOMMANDS[name].split(":")
            return getattr(importlib.import_module(module_name), attribute)
        return super().get_command(ctx, name)

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


@click.group(cls=AmlocalGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(amlocal.__version__, prog_name="amlocal")
def cli():
    """Azure Machine Learning (SDK v1) training runs, emulated on this machine.

    Runs go through Azure ML's stages (Preparing, Scaling, Running, PostProcessing) in Docker or
    as a local process, and land in a run history under $AMLOCAL_HOME (default ~/.amlocal).
    """


@cli.command()
@spec_options
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
def run(script_args, backend_name, workspace_config, sdk, dry_run, detach, quiet_build, as_json,
        **spec):
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
    spec = run_spec(spec, script_args)
    backend = backend_named(backend_name, workspace_config, sdk)
    if dry_run:
        show_dry_run(backend, spec, as_json=as_json)
        return
    printer = EventPrinter(show_build_output=not quiet_build)

    def follow(handle, canceling):
        # A local run driven here already sends its events to the printer; an Azure run's
        # output arrives while it is waited for. Once canceled, only its end is waited for.
        return handle.wait() if canceling else handle.wait(on_event=printer)

    submit_and_follow(lambda: backend.submit(spec, on_event=printer, detach=detach), follow,
                      detach=detach, as_json=as_json)


def main():
    cli(prog_name="amlocal")
