"""History: experiments (get or create, list, get by id).

An experiment here is a name: the experiments of the run history are the names its runs carry,
plus the ones created through the emulator before any run (kept in the emulator's
experiments.json until the run history has a table for them). An experiment's id is derived
from the workspace and its name, so it is stable without being stored.
"""

import fcntl
import json
import os
import re
import secrets
import time
from contextlib import contextmanager

from amlocal.backends.history.store import iso_time
from amlocal.service.config import emulator_dir
from amlocal.service.errors import not_found
from amlocal.service.wire import WS, operation
from amlocal.validation import check_experiment_name

HISTORY = "/history/v1.0" + WS
EXPERIMENTS_FILE = "experiments.json"
# azureml-core's filter for Experiment.list(ws, experiment_name=...): "(name eq NAME)".
_NAME_FILTER = re.compile(r"\(name eq ([^()]*)\)")


def experiment_id(service, name):
    return service.identity.experiment_id(name)


def _created_path(service):
    return emulator_dir(service.home) / EXPERIMENTS_FILE


@contextmanager
def _created_experiments(service, change=False):
    """{name: created time} of the experiments created through the emulator, under a lock (to
    change them: the file is rewritten whole, under a name of its own, then renamed)."""
    path = _created_path(service)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(EXPERIMENTS_FILE + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if change else fcntl.LOCK_SH)
        try:
            with open(path, encoding="utf-8") as handle:
                created = json.load(handle)
        except FileNotFoundError:
            created = {}
        if not isinstance(created, dict):
            created = {}
        yield created
        if change:
            temporary = path.with_name(f".{EXPERIMENTS_FILE}.{secrets.token_hex(8)}")
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(created, handle)
            os.replace(temporary, path)


def experiments(service):
    """{name: created time (epoch)} of every experiment of the workspace."""
    with _created_experiments(service) as created:
        known = {name: float(at) for name, at in created.items() if isinstance(at, (int, float))}
    for record in service.store.list_runs():
        name = record["experiment"]
        if "created_at" in record:
            known[name] = min(known.get(name, record["created_at"]), record["created_at"])
        else:
            known.setdefault(name, time.time())
    return known


def experiment_dto(service, name, created_at):
    return {"experimentId": experiment_id(service, name), "name": name, "description": None,
            "createdUtc": iso_time(created_at), "archivedTime": None, "tags": {}}


def find_experiment(service, name):
    """The experiment's DTO; 404 with Azure's body when there is none."""
    created_at = experiments(service).get(name)
    if created_at is None:
        raise not_found(f"experiment {name!r} was not found in workspace "
                        f"{service.identity.workspace_name}")
    return experiment_dto(service, name, created_at)


def name_of_experiment_id(service, identifier):
    for name in experiments(service):
        if experiment_id(service, name) == identifier:
            return name
    raise not_found(f"no experiment with id {identifier!r}")


@operation(HISTORY + "/experiments/{experiment_name}", ["GET"])
def get_experiment(call):
    return find_experiment(call.service, call.params["experiment_name"])


def create_experiment_named(service, name):
    """Create experiment `name` (a checked name) before any run has it; kept if it exists."""
    with _created_experiments(service, change=True) as created:
        created.setdefault(name, time.time())


@operation(HISTORY + "/experiments/{experiment_name}", ["POST"])
def create_experiment(call):
    name = call.params["experiment_name"]
    check_experiment_name(name)
    create_experiment_named(call.service, name)
    return find_experiment(call.service, name)


@operation(HISTORY + "/experimentids/{experiment_id}", ["GET"])
def get_experiment_by_id(call):
    return find_experiment(call.service,
                           name_of_experiment_id(call.service, call.params["experiment_id"]))


@operation(HISTORY + "/experiments:query", ["POST"])
def list_experiments(call):
    query = call.json_object()
    wanted = None
    found = _NAME_FILTER.search(str(query.get("filter") or ""))
    if found:
        wanted = found.group(1).strip().strip("'\"")
    elif "Tags/" in str(query.get("filter") or ""):
        return {"value": [], "continuationToken": None, "nextLink": None}  # no experiment has tags
    known = experiments(call.service)
    return {"value": [experiment_dto(call.service, name, at) for name, at in sorted(known.items())
                      if wanted is None or name == wanted],
            "continuationToken": None, "nextLink": None}


ROUTES = [list_experiments, get_experiment, create_experiment, get_experiment_by_id]
