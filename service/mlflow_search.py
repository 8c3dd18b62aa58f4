"""MLflow's tracking REST API: searching runs, and experiments (service/mlflow.py has the rest).

`MlflowClient().search_runs(experiment_ids, filter_string)` over the run history's runs (newest
first, those the caller's token may see), with the common part of MLflow's filter grammar; an
experiment is the run history's experiment of the same name and id.
"""

import re
import time

from amlocal.errors import UserInputError
from amlocal.service.errors import ServiceError, bad_request, not_found
from amlocal.service.experiments import create_experiment_named, experiment_id, experiments
from amlocal.service.mlflow import (MAX_SEARCH_RESULTS, allowed, bounded, experiment_name,
                                    known_experiments, listed, milliseconds, mlflow_operation,
                                    page_start, parameter, run_json)
from amlocal.validation import check_experiment_name


@mlflow_operation("/runs/search", ["POST"])
def search_runs(call):
    body = call.json_object()
    wanted = {experiment_id(call.service, experiment_name(call, str(identifier)))
              for identifier in listed(body, "experiment_ids", 1000)}
    if body.get("order_by"):
        raise ServiceError(501, "NotImplemented", "search_runs' order_by is not emulated yet "
                           "(runs come newest first)")
    matches = run_filter(body.get("filter") or "")
    start = page_start(body.get("page_token"))
    size = bounded(body.get("max_results"), 1000, MAX_SEARCH_RESULTS)
    found = []
    store = call.service.store
    for record in store.list_runs():
        if "corrupted" in record or (wanted and experiment_id(
                call.service, record["experiment"]) not in wanted):
            continue
        if not allowed(call, record["id"]):
            continue
        full = store.get_run(record["id"])
        document = run_json(call.service, full)
        if matches(document):
            found.append(document)
    page = found[start:start + size]
    following = start + size if start + size < len(found) else None
    return {"runs": page, **({"next_page_token": str(following)} if following else {})}


_CLAUSE = re.compile(r"\s*(metrics|metric|params|param|tags|tag|attributes|attribute|attr|run)"
                     r"\.(`[^`]+`|\"[^\"]+\"|[\w./-]+)\s*(=|!=|>=|<=|>|<)\s*"
                     r"('(?:[^']*)'|\"(?:[^\"]*)\"|[-+\w.]+)\s*", re.IGNORECASE)
_COMPARE = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}


def run_filter(expression):
    """A predicate on an MLflow run document for a search filter of MLflow's grammar's common
    part: clauses `metrics.k OP number`, `params.k = 'v'`, `tags.k = 'v'` and
    `attributes.status | run_name | run_id = 'v'` joined by AND; 501 naming anything else."""
    tests = []
    for clause in re.split(r"\s+and\s+", expression.strip(), flags=re.IGNORECASE) if \
            expression.strip() else []:
        found = _CLAUSE.fullmatch(clause)
        if not found:
            raise ServiceError(501, "NotImplemented",
                               f"the search filter clause {clause[:200]!r} is not emulated yet")
        kind, key, operator, value = found.groups()
        key, value = key.strip("`\""), value.strip("'\"")
        tests.append(_clause_test(kind.lower(), key, operator, value))
    return lambda document: all(test(document) for test in tests)


def _clause_test(kind, key, operator, value):
    compare = _COMPARE[operator]
    if kind.startswith("metric"):
        try:
            number = float(value)
        except ValueError:
            raise bad_request(f"metric filters compare with a number, not {value!r}") from None
        return lambda document: any(metric["key"] == key and isinstance(metric["value"], float)
                                    and compare(metric["value"], number)
                                    for metric in document["data"]["metrics"])
    if kind.startswith("param") or kind.startswith("tag"):
        field = "params" if kind.startswith("param") else "tags"
        if operator not in ("=", "!="):
            raise bad_request(f"{field} filters compare with = or !=")
        return lambda document: any(entry["key"] == key and compare(entry["value"], value)
                                    for entry in document["data"][field])
    if key not in ("status", "run_name", "run_id") or operator not in ("=", "!="):
        raise ServiceError(501, "NotImplemented",
                           f"the search filter on attributes.{key} {operator} is not emulated yet")
    return lambda document: compare(document["info"][key], value)


# -- experiments ------------------------------------------------------------------------------

def _experiment_json(service, name, created_at):
    return {"experiment_id": experiment_id(service, name), "name": name,
            "artifact_location": "mlflow-artifacts:/", "lifecycle_stage": "active",
            "creation_time": milliseconds(created_at),
            "last_update_time": milliseconds(created_at), "tags": []}


@mlflow_operation("/experiments/get", ["GET"])
def get_experiment(call):
    identifier = parameter(call, "experiment_id")
    name = experiment_name(call, identifier)
    known = known_experiments(call.service)
    return {"experiment": _experiment_json(call.service, name, known.get(name, time.time()))}


@mlflow_operation("/experiments/get-by-name", ["GET"])
def get_experiment_by_name(call):
    name = parameter(call, "experiment_name")
    known = known_experiments(call.service)
    if name not in known:
        raise not_found(f"Could not find experiment with name '{name}'")
    return {"experiment": _experiment_json(call.service, name, known[name])}


@mlflow_operation("/experiments/create", ["POST"], auth="token")
def create_experiment(call):
    name = parameter(call, "name")
    try:
        check_experiment_name(name)
    except UserInputError as error:
        raise bad_request(str(error)) from None
    if name in experiments(call.service):
        raise ServiceError(409, "Conflict", f"Experiment '{name}' already exists.")
    create_experiment_named(call.service, name)
    return {"experiment_id": experiment_id(call.service, name)}


@mlflow_operation("/experiments/search", ["POST"])
def search_experiments(call):
    body = call.json_object()
    if body.get("filter"):
        raise ServiceError(501, "NotImplemented", "search_experiments' filter is not emulated "
                           "yet")
    return {"experiments": [_experiment_json(call.service, name, at)
                            for name, at in sorted(known_experiments(call.service).items())]}


ROUTES = [search_runs, get_experiment, get_experiment_by_name, create_experiment,
          search_experiments]
