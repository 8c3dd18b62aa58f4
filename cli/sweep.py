"""`amlocal sweep`: a HyperDrive hyperparameter sweep from the command line."""

import ast
import json
import signal
import time

import click

from amlocal.backends import get_backend
from amlocal.backends.base import EXECUTORS, EnvironmentSpec, RunSpec
from amlocal.backends.status import is_terminal
from amlocal.cli.main import _raise_keyboard_interrupt, parse_inputs
from amlocal.cli.render import echo_json, echo_status, summary_line, table
from amlocal.errors import UserInputError
from amlocal.train.hyperdrive import parameter_expressions
from amlocal.train.hyperdrive.policy import (BanditPolicy, MedianStoppingPolicy,
                                             NoTerminationPolicy, TruncationSelectionPolicy)
from amlocal.train.hyperdrive.runconfig import HyperDriveConfig, PrimaryMetricGoal
from amlocal.train.hyperdrive.sampling import (BayesianParameterSampling, GridParameterSampling,
                                               RandomParameterSampling)

_DISTRIBUTIONS = ("choice", "randint", "uniform", "quniform", "loguniform", "qloguniform", "normal",
                  "qnormal", "lognormal", "qlognormal")
_POLICIES = {"bandit": BanditPolicy, "median": MedianStoppingPolicy,
             "truncation": TruncationSelectionPolicy, "none": NoTerminationPolicy}
_SAMPLINGS = {"random": RandomParameterSampling, "grid": GridParameterSampling,
              "bayesian": BayesianParameterSampling}


def _call(text, known, what):
    """Parse `name(arg, key=value, ...)` with literal arguments only (nothing is evaluated)."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
        if isinstance(node, ast.Name):  # a bare name: no arguments
            return node.id, [], {}
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            raise ValueError
        args = [ast.literal_eval(argument) for argument in node.args]
        kwargs = {keyword.arg: ast.literal_eval(keyword.value) for keyword in node.keywords}
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        # literal_eval's refusals, and its failures on malformed literals ({[1]: 2}, deep nesting)
        raise UserInputError(f"cannot read {what} {text!r}: write it as name(value, ...), e.g. "
                             f"{known[0]}(...)") from None
    if node.func.id not in known:
        raise UserInputError(f"unknown {what} {node.func.id!r}: use one of {', '.join(known)}")
    return node.func.id, args, kwargs


def parse_parameter(text):
    """'batchsize=choice(64,128)' -> ('batchsize', ['choice', [[64, 128]]])."""
    name, separator, expression = text.partition("=")
    if not separator or not name.strip():
        raise UserInputError(f"--param expects NAME=DISTRIBUTION(...), got {text!r}")
    function, args, kwargs = _call(expression, _DISTRIBUTIONS, "distribution")
    try:
        return name.strip(), getattr(parameter_expressions, function)(*args, **kwargs)
    except TypeError as error:  # the wrong number or names of arguments
        raise UserInputError(f"--param {text!r}: {error}") from None


def parse_policy(text):
    """'bandit(slack_factor=0.1,evaluation_interval=2)' -> BanditPolicy(...)."""
    function, args, kwargs = _call(text, list(_POLICIES), "policy")
    try:
        return _POLICIES[function](*args, **kwargs)
    except TypeError as error:
        raise UserInputError(f"policy {text!r}: {error}") from None


@click.command()
@click.argument("source_dir", default=".", type=click.Path(file_okay=False))
@click.option("--script", required=True, help="Entry script, relative to SOURCE_DIR.")
@click.option("--param", "params", multiple=True, required=True, metavar="NAME=DIST(...)",
              help="A hyperparameter and its distribution, e.g. 'lr=loguniform(-6,-1)' or "
                   "'batchsize=choice(64,128,256)'; passed to the script as --NAME VALUE. Repeatable.")
@click.option("--sampling", type=click.Choice(list(_SAMPLINGS)), default="random", show_default=True)
@click.option("--policy", default="none", show_default=True,
              help="Early termination: bandit(slack_factor=..|slack_amount=.., evaluation_interval=.., "
                   "delay_evaluation=..), median(...), truncation(truncation_percentage=.., ...), none.")
@click.option("--metric", required=True, help="The primary metric the script logs.")
@click.option("--goal", type=click.Choice(["maximize", "minimize"]), required=True)
@click.option("--max-total-runs", type=int, required=True)
@click.option("--max-concurrent-runs", type=int)
@click.option("--max-duration-minutes", type=int, default=10080, show_default=True)
@click.option("--seed", type=int, help="Seed of random or Bayesian sampling, for a repeatable sweep.")
@click.option("--experiment", default="Default", show_default=True)
@click.option("--compute", default="local", show_default=True)
@click.option("--executor", type=click.Choice(EXECUTORS))
@click.option("--input", "inputs", multiple=True, metavar="NAME=PATH")
@click.option("--pip", "pip_packages", multiple=True, metavar="PKG")
@click.option("--recipe", default="chainer", show_default=True)
@click.option("--backend", "backend_name", type=click.Choice(["local", "azure"]), default="local",
              show_default=True, help="Sweep here, or on Azure ML as a HyperDrive run.")
@click.option("--workspace-config", type=click.Path(), metavar="PATH",
              help="--backend azure: the workspace's config.json (or a folder to search from).")
@click.option("--dry-run", is_flag=True, help="--backend azure: print the HyperDrive configuration "
                                              "and the child runs' submission; send nothing.")
@click.option("--detach", is_flag=True, help="Return once the sweep is submitted; it runs on.")
@click.option("--json", "as_json", is_flag=True, help="End with the sweep and its children as JSON.")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
def sweep(source_dir, script, params, sampling, policy, metric, goal, max_total_runs,
          max_concurrent_runs, max_duration_minutes, seed, experiment, compute, executor, inputs,
          pip_packages, recipe, backend_name, workspace_config, dry_run, detach, as_json,
          script_args):
    """Sweep hyperparameters of SCRIPT (HyperDrive): child runs on the compute target, sampled,
    early-terminated by the policy; arguments after -- go to every child.

    \b
    Example:
      amlocal sweep trainer --script chainer_mnist.py --compute cpu2 \\
          --param 'batchsize=choice(64,128,256)' --param 'lr=loguniform(-6,-1)' \\
          --policy 'bandit(slack_factor=0.1,evaluation_interval=2)' --metric Accuracy \\
          --goal maximize --max-total-runs 8 --max-concurrent-runs 2 \\
          --input mnist=./mnist -- --epochs 3 --data-dir '$AZUREML_DATAREFERENCE_mnist'
    """
    space = dict(parse_parameter(text) for text in params)
    properties = {"seed": seed} if seed is not None else None
    config = HyperDriveConfig(
        estimator=_FixedSpec(RunSpec(
            source_dir=source_dir, script=script, arguments=tuple(script_args),
            experiment=experiment, inputs=parse_inputs(inputs), executor=executor, compute=compute,
            environment=EnvironmentSpec(recipe=recipe, pip_packages=tuple(pip_packages)))),
        hyperparameter_sampling=_SAMPLINGS[sampling](space, properties=properties),
        policy=parse_policy(policy), primary_metric_name=metric,
        primary_metric_goal=PrimaryMetricGoal.from_str(goal), max_total_runs=max_total_runs,
        max_concurrent_runs=max_concurrent_runs, max_duration_minutes=max_duration_minutes)
    if (dry_run or workspace_config) and backend_name != "azure":
        raise UserInputError("--dry-run and --workspace-config are for --backend azure")
    if backend_name == "azure":
        azure = get_backend("azure", workspace_config=workspace_config)
        if dry_run:
            from amlocal.backends.azure.backend import dry_run_text

            document = azure.dry_run_sweep(config.estimator.spec, config._sweep())
            if as_json:
                echo_json(document)
            else:
                click.echo(dry_run_text(document))
            return
        handle = azure.submit_sweep(config.estimator.spec, config._sweep())
        echo_status(f"HyperDrive run {handle.id} submitted to Azure ML; follow it with "
                    f"`amlocal runs wait {handle.id}`")
        click.echo(handle.id)
        return
    backend = get_backend("local")
    handle = backend.submit_sweep(config.estimator.spec, config._sweep(), detach=True)
    echo_status(f"Sweep {handle.id} submitted: {max_total_runs} run(s), "
                f"{config._max_concurrent_runs} at a time, {sampling} sampling")
    if detach:
        if as_json:
            echo_json(handle.get_details())
        else:
            click.echo(handle.id)
        return
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        details = _follow(backend, handle)
    except KeyboardInterrupt:
        echo_status(f"Canceling sweep {handle.id} and its child runs ...")
        handle.cancel()
        details = _follow(backend, handle)
    from amlocal.backends.local.sweep import child_summaries

    children = child_summaries(backend.store, handle.id)
    echo_status(summary_line(details))
    click.echo(_children_table(children, metric), err=as_json)
    if as_json:
        echo_json(dict(details, children=children))
    if details["status"] != "Completed":
        raise click.exceptions.Exit(1)


class _FixedSpec:
    """A RunSpec in the place of the estimator HyperDriveConfig takes."""

    def __init__(self, spec):
        self.spec = spec

    def _to_spec(self, experiment_name, tags=None):
        return self.spec


def _follow(backend, handle):
    """Print each child's changes of status until the sweep ends; return the sweep's details."""
    from amlocal.backends.local.sweep import child_summaries

    shown = {}
    while True:
        status = handle.get_status()
        for child in child_summaries(backend.store, handle.id):
            state = (child["status"], child["last_primary_metric"])
            if shown.get(child["run_id"]) != state:
                shown[child["run_id"]] = state
                metric = "" if child["last_primary_metric"] is None else \
                    f"  primary metric {child['last_primary_metric']:.6g}"
                reason = f"  ({child['error']})" if child["status"] == "Canceled" else ""
                echo_status(f"  {child['run_id']}  {json.dumps(child['hyperparameters'])}  "
                            f"{child['status']}{metric}{reason}")
        if is_terminal(status):
            return handle.get_details()
        time.sleep(1)


def _children_table(children, metric):
    rows = [{"run": child["run_id"], "status": child["status"],
             "best": child["best_primary_metric"], "last": child["last_primary_metric"],
             "hyperparameters": json.dumps(child["hyperparameters"])} for child in children]
    return table(rows, [("CHILD RUN", "run"), ("STATUS", "status"), (f"BEST {metric.upper()}", "best"),
                        (f"LAST {metric.upper()}", "last"), ("HYPERPARAMETERS", "hyperparameters")])


def children_table(store, sweep_id):
    """The children table `amlocal runs show` prints for a sweep."""
    from amlocal.backends.local.sweep import child_summaries

    metric = store.get_run(sweep_id)["spec"]["sweep"]["primary_metric_config"]["name"]
    return _children_table(child_summaries(store, sweep_id), metric)
