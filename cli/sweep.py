"""`amlocal sweep`: a HyperDrive hyperparameter sweep from the command line."""

import ast
import json
import time

import click

from amlocal.backends.status import is_terminal
from amlocal.cli.backends import backend_named
from amlocal.cli.follow import submit_and_follow
from amlocal.cli.dry_run import show_dry_run
from amlocal.cli.render import echo_status, table
from amlocal.cli.spec_options import run_spec, spec_options
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
@spec_options
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
@click.option("--max-duration-minutes", type=int, default=10080, show_default=True,
              help="End the sweep (its running children canceled) after this long.")
@click.option("--seed", type=int, help="Seed of random or Bayesian sampling, for a repeatable sweep.")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
def sweep(script_args, params, sampling, policy, metric, goal, max_total_runs, max_concurrent_runs,
          max_duration_minutes, seed, backend_name, workspace_config, sdk, dry_run, detach,
          quiet_build, as_json, **spec):
    """Sweep hyperparameters of SCRIPT (HyperDrive): child runs on the compute target, sampled,
    early-terminated by the policy; arguments after -- go to every child. Every option of
    `amlocal run` applies to each child run.

    \b
    Example:
      amlocal sweep trainer --script chainer_mnist.py --compute cpu2 \\
          --param 'batchsize=choice(64,128,256)' --param 'lr=loguniform(-6,-1)' \\
          --policy 'bandit(slack_factor=0.1,evaluation_interval=2)' --metric Accuracy \\
          --goal maximize --max-total-runs 8 --max-concurrent-runs 2 \\
          --input mnist=./mnist -- --epochs 3 --data-dir '$AZUREML_DATAREFERENCE_mnist'
    """
    template = run_spec(spec, script_args)
    space = dict(parse_parameter(text) for text in params)
    properties = {"seed": seed} if seed is not None else None
    config = HyperDriveConfig(
        estimator=_FixedSpec(template),
        hyperparameter_sampling=_SAMPLINGS[sampling](space, properties=properties),
        policy=parse_policy(policy), primary_metric_name=metric,
        primary_metric_goal=PrimaryMetricGoal.from_str(goal), max_total_runs=max_total_runs,
        max_concurrent_runs=max_concurrent_runs, max_duration_minutes=max_duration_minutes)
    backend = backend_named(backend_name, workspace_config, sdk)
    if dry_run:
        show_dry_run(backend, template, config._sweep(), as_json=as_json)
        return

    def submit():
        handle = backend.submit_sweep(template, config._sweep(), detach=True)
        echo_status(f"Sweep {handle.id} submitted: {max_total_runs} run(s), "
                    f"{config._max_concurrent_runs} at a time, {sampling} sampling")
        return handle

    def show_children(handle, details):
        children = handle.get_child_summaries()
        click.echo(_children_table(children, metric), err=as_json)
        return {"children": children}

    submit_and_follow(submit, lambda handle, canceling: _follow(handle), detach=detach,
                      as_json=as_json, noun="sweep", extra=show_children,
                      follow_with="runs wait {id}")


class _FixedSpec:
    """A RunSpec in the place of the estimator HyperDriveConfig takes."""

    def __init__(self, spec):
        self.spec = spec

    def _to_spec(self, experiment_name, tags=None):
        return self.spec


def _follow(handle):
    """Print each child's changes of status until the sweep ends; return the sweep's details."""
    shown = {}
    while True:
        status = handle.get_status()
        for child in handle.get_child_summaries():
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


def sweep_view(handle):
    """What `amlocal runs show` shows of a sweep beyond its run: the children table as text, and
    for --json its children ({id, status, hyperparameters, best, last}) and the best child
    ({id, metric, value}: the best value any child logged, by the sweep's goal; null if none)."""
    metric = handle.get_details()["sweep"]["primary_metric_config"]
    summaries = handle.get_child_summaries()
    children = [{"id": child["run_id"], "status": child["status"],
                 "hyperparameters": child["hyperparameters"], "best": child["best_primary_metric"],
                 "last": child["last_primary_metric"]} for child in summaries]
    scored = [child for child in children if child["best"] is not None]
    pick = max if metric["goal"] == "maximize" else min
    best = pick(scored, key=lambda child: child["best"]) if scored else None
    best_child = best and {"id": best["id"], "metric": metric["name"], "value": best["best"]}
    return _children_table(summaries, metric["name"]), {"children": children,
                                                         "best_child": best_child}
