"""`amlocal services deploy ... --backend azure`: the deployment to Azure Container Instances
through azureml-core (backends/azure/deploy_v1.py translates, the session deploys), or with
--dry-run what would be uploaded and sent, with no Azure account, network or Docker."""

import click

from amlocal.cli.render import echo_json
from amlocal.errors import UserInputError


def deploy_to_azure(name, models, entry_script, source_dir, environment, *, kind, port, dry_run,
                    workspace_config, timeout, as_json, sdk=None, **settings):
    """Deploy (or with `dry_run` describe) the ACI service `name` (on SDK v2, the managed online
    endpoint `name`); `settings` are deploy_v1.translate_deployment's keyword arguments."""
    from amlocal.backends.azure.backend import _required_workspace_config
    from amlocal.backends.azure.errors import require_sdk
    from amlocal.backends.azure.sdk_choice import chosen_sdk

    if kind not in (None, "aci"):
        raise UserInputError(f"--backend azure deploys to ACI: --kind {kind} is local only")
    if port is not None:
        raise UserInputError("--port is local only: Azure gives an ACI service its own address")
    if chosen_sdk(sdk) == "v2":
        return _deploy_online(name, models, entry_script, source_dir, environment,
                              dry_run=dry_run, workspace_config=workspace_config,
                              as_json=as_json, **settings)
    require_sdk()
    from amlocal.backends.azure.deploy_v1 import translate_deployment
    from amlocal.cli.dry_run import deployment_dry_run_text

    deployment = translate_deployment(name, models, entry_script, source_dir, environment,
                                      **settings)
    if dry_run:
        return _show_dry_run(deployment.describe(), workspace_config, as_json,
                             deployment_dry_run_text)
    from amlocal.backends.azure.session import AzureSession

    config = _required_workspace_config(workspace_config)
    click.echo(f"Deploying {name} to ACI in workspace {config['workspace_name']} (uploading "
               f"{deployment.source_directory}, building the image on Azure) ...", err=True)
    result = AzureSession(config["config_file"]).deploy_webservice(
        deployment, timeout_s=timeout, on_line=lambda line: click.echo(line, err=True))
    _show_result(name, result, as_json, healthy="Healthy")


def _deploy_online(name, models, entry_script, source_dir, environment, *, dry_run,
                   workspace_config, as_json, **settings):
    """SDK v2: the managed online endpoint `name` and its deployment (deploy_v2.py)."""
    from amlocal.backends.azure.backend import _required_workspace_config
    from amlocal.backends.azure.errors import require_v2_sdk

    require_v2_sdk()
    from amlocal.backends.azure.deploy_v2 import translate_online_deployment
    from amlocal.cli.dry_run import online_deployment_dry_run_text

    online = translate_online_deployment(name, models, entry_script, source_dir, environment,
                                         **settings)
    if dry_run:
        return _show_dry_run(online.describe(), workspace_config, as_json,
                             online_deployment_dry_run_text)
    from amlocal.backends.azure.session_v2 import AzureSessionV2

    config = _required_workspace_config(workspace_config)
    click.echo(f"Deploying {name} as a managed online endpoint in workspace "
               f"{config['workspace_name']} (building the image on Azure) ...", err=True)
    with online.build_context() as (endpoint, deployment):
        result = AzureSessionV2(config["config_file"]).deploy_online(endpoint, deployment)
    _show_result(name, result, as_json, healthy="Succeeded")


def _show_dry_run(described, workspace_config, as_json, as_text):
    """--dry-run: the deployment as described, with the workspace a config.json names."""
    from amlocal.backends.azure.backend import find_workspace_config

    document = {"backend": "azure", "dry_run": True,
                "workspace": find_workspace_config(workspace_config), **described}
    if as_json:
        echo_json(document)
    else:
        click.echo(as_text(document))


def _show_result(name, result, as_json, healthy):
    """The deployed service's answer; exit 1 where its state is not `healthy`."""
    if as_json:
        echo_json(result)
    else:
        click.echo(f"Service {name}: {result['state']} at {result['scoring_uri']}")
    if result["state"] != healthy:
        click.echo(f"Error: service {name} is {result['state']}: {result['error']}", err=True)
        raise SystemExit(1)
