"""azureml-core, bound to the local Azure ML service (`amlocal serve`).

    from amlocal.emulator import workspace
    ws = workspace()          # a real azureml.core.Workspace, served by amlocal
    Experiment(ws, "demo")...  # the rest is unchanged Azure ML code

or, for code that builds its own Workspace:

    Workspace(subscription_id, resource_group, name, auth=amlocal.emulator.auth())
    Workspace.from_config("$AMLOCAL_HOME/emulator/config.json", auth=amlocal.emulator.auth())

The authentication object never starts an interactive login and never reaches the network: it
points azureml-core's ARM host at the emulator and signs its own bearer tokens with the secret of
this run history ($AMLOCAL_HOME/emulator/token-secret, readable by its owner only), so holding
the history is what grants the workspace.
"""

import copy
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from amlocal.backends.history.store import default_home
from amlocal.errors import AmlocalError
from amlocal.service import config as service_config
from amlocal.service.config import config_path, emulator_dir, read_config
from amlocal.service.tokens import WORKSPACE_SCOPE, TokenIssuer

# A token is renewed when fewer than this many seconds are left (azureml-core's own margin for
# run tokens is 95 s).
_RENEW_MARGIN_S = 300


class EmulatorNotRunningError(AmlocalError):
    """No `amlocal serve` answers for this run history (or at the endpoint given)."""


def running_config(home=None):
    """The config.json of the emulator serving `home` ($AMLOCAL_HOME), once it answers;
    EmulatorNotRunningError otherwise."""
    path = config_path(home or default_home())
    try:
        document = read_config(path)
        endpoint = document["endpoint"]
        names = (document["subscription_id"], document["resource_group"],
                 document["workspace_name"])
    except FileNotFoundError:
        raise EmulatorNotRunningError(f"no amlocal emulator is running for this run history "
                                      f"({path} does not exist): start one with `amlocal serve`") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EmulatorNotRunningError(f"cannot read the emulator's config {path}: {error}") from None
    _check_answers(endpoint)
    return document | {"endpoint": endpoint, "names": names}


def _check_answers(endpoint):
    parts = urlsplit(endpoint)
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=2):
            pass
    except (OSError, ValueError) as error:
        raise EmulatorNotRunningError(f"the amlocal emulator at {endpoint} does not answer "
                                      f"({error}): start one with `amlocal serve`") from None


def _authentication_class():
    # azureml-core is imported when a workspace is asked for, not with amlocal.
    from azureml.core.authentication import AbstractAuthentication, _SubscriptionInfo

    class EmulatorAuthentication(AbstractAuthentication):
        """azureml-core's authentication for amlocal's emulator: ARM is the emulator, tokens
        are the emulator's own."""

        def __init__(self, endpoint, issuer, subscription_id):
            super().__init__(cloud="AzureCloud")
            # A copy: the cloud objects are shared by every authentication in the process.
            self._cloud_type = copy.deepcopy(self._cloud_type)
            self._cloud_type.endpoints.resource_manager = endpoint.rstrip("/")
            self._endpoint = endpoint
            self._issuer = issuer
            self._subscription_id = subscription_id
            self._token = None
            self._expires = 0

        def _current_token(self):
            if self._expires - time.time() < _RENEW_MARGIN_S:
                self._token = self._issuer.issue(WORKSPACE_SCOPE)
                self._expires = self._issuer.verify(self._token).expires
            return self._token

        def _get_arm_token(self):
            return self._current_token()

        def _get_graph_token(self):
            return self._current_token()

        def _get_azureml_client_token(self):
            return self._current_token()

        def _get_all_subscription_ids(self):
            return [_SubscriptionInfo("amlocal", self._subscription_id)], "amlocal"

        def _get_workspace(self, subscription_id, resource_group, name):
            return None  # ask "ARM", that is, the emulator

        def __repr__(self):
            return f"EmulatorAuthentication({self._endpoint!r})"

    return EmulatorAuthentication


def _target(endpoint, home):
    """(endpoint, (subscription id, resource group, workspace name)) of the emulator to use."""
    if endpoint is None:
        config = running_config(home)
        return config["endpoint"], config["names"]
    _check_answers(endpoint)
    return endpoint, (service_config.SUBSCRIPTION_ID, service_config.RESOURCE_GROUP,
                      service_config.WORKSPACE_NAME)


def blob_route_environment(endpoint, home, environ, keep_https=False):
    """What a client process whose environment is `environ` must set for azureml-core's blob
    uploads to reach the https route of the emulator at `endpoint` (service.config.
    client_environment: the route's proxy for the blob host, as HTTPS_PROXY when none is set
    and `keep_https` is false, NO_PROXY for the emulator's address, REQUESTS_CA_BUNDLE with the
    emulator's CA added to the bundle in use); nothing when the emulator at `endpoint` left no
    config.json naming its proxy."""
    try:
        config = read_config(config_path(home))
    except (OSError, ValueError):
        return {}
    if config.get("endpoint") != endpoint or not isinstance(config.get("blob_proxy"), str):
        return {}
    return service_config.client_environment(home, endpoint, config["blob_proxy"], environ,
                                             keep_https=keep_https)


def use_blob_route(endpoint, home, keep_https=False):
    """Set, in this process's environment, what blob uploads need (blob_route_environment).
    Returns the variables it set."""
    changes = blob_route_environment(endpoint, home, os.environ, keep_https)
    os.environ.update(changes)
    return changes


def serving_home(workspace_config):
    """(run history, endpoint) of the emulator that wrote the workspace config file
    `workspace_config` (<home>/emulator/config.json, naming its "endpoint"); None for any other
    workspace config (an Azure ML workspace's)."""
    path = Path(workspace_config)
    home = path.parent.parent
    if path != config_path(home):
        return None
    try:
        endpoint = read_config(path).get("endpoint")
    except (OSError, ValueError):
        return None
    return (home, endpoint) if isinstance(endpoint, str) else None


def auth(endpoint=None, home=None):
    """An azureml-core authentication object for the emulator at `endpoint` (default: the one
    serving $AMLOCAL_HOME, from its config.json); EmulatorNotRunningError when none answers.
    It also sets this process's environment for blob uploads (use_blob_route)."""
    home = home or default_home()
    endpoint, names = _target(endpoint, home)
    use_blob_route(endpoint, home)
    authentication_class = _authentication_class()
    return authentication_class(endpoint, TokenIssuer(emulator_dir(home) / "token-secret"),
                                names[0])


def workspace(endpoint=None, home=None):
    """A real azureml.core.Workspace served by the emulator at `endpoint` (default: the one
    serving $AMLOCAL_HOME); EmulatorNotRunningError when none answers."""
    from azureml.core import Workspace

    home = home or default_home()
    endpoint, names = _target(endpoint, home)
    return Workspace(*names, auth=auth(endpoint, home))


def mlflow_tracking_uri(endpoint=None, home=None):
    """The MLflow tracking URI of the run history `home` ($AMLOCAL_HOME), served by the emulator
    at `endpoint` (default: the `amlocal serve` running for it); EmulatorNotRunningError when
    none answers. MLflow's client sends MLFLOW_TRACKING_TOKEN as its bearer token, so this
    process's MLFLOW_TRACKING_TOKEN is set to a workspace token (good for 24 hours)."""
    from amlocal.service.mlflow import tracking_uri

    home = home or default_home()
    endpoint, _names = _target(endpoint, home)
    os.environ["MLFLOW_TRACKING_TOKEN"] = TokenIssuer(
        emulator_dir(home) / "token-secret").issue(WORKSPACE_SCOPE)
    return tracking_uri(endpoint, service_config.WorkspaceIdentity.of_home(home).arm_id)
