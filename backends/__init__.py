"""Run backends: the one Run interface (base.py), its status state machine (status.py) and the
implementations, found by name and imported only when asked for, so that local use never imports
a cloud SDK."""

import importlib

from amlocal.errors import RunNotFoundError, UserInputError
from amlocal.validation import check_text, shown

_REGISTRY = {
    "local": "amlocal.backends.local:LocalBackend",
    "azure": "amlocal.backends.azure:AzureBackend",
}


def backend_names():
    return sorted(_REGISTRY)


def get_backend(name="local", **options):
    """Instantiate the backend registered as `name` with the given options."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise UserInputError(
            f"unknown backend {name!r}: available: {', '.join(backend_names())}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)(**options)


def run_side_api_path():
    """The file of the run-side API (`amlocal_run`, what Run.get_context() is inside a run)."""
    from amlocal.backends.local.lifecycle import RUNTIME_DIR

    return RUNTIME_DIR / "amlocal_run.py"


def default_home():
    """The run history's folder when none is named: $AMLOCAL_HOME, else ~/.amlocal."""
    from amlocal.backends.history.store import default_home as history_home

    return history_home()


def run_page_url(run_id, home=None):
    """The run's page in the web UI (`amlocal ui`) while one serves the history at `home`
    (default: default_home()), else None."""
    from amlocal.backends.history.ui_address import run_page_url as page_url

    return page_url(default_home() if home is None else home, run_id)


def open_run(run_id, home=None):
    """The handle of a run in the local history, from the backend that ran it (an Azure run's
    handle asks Azure; a local run's reads the history)."""
    from amlocal.backends.history.store import RunStore

    try:
        check_text(run_id, "run id")
    except UserInputError:  # amlocal never gives a run such an id
        raise RunNotFoundError(f"no run with id {shown(run_id)}") from None
    backend = RunStore(home).get_run(run_id)["backend"]
    return get_backend(backend, home=home).get_run(run_id)
