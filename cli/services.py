"""`amlocal services ...`: deploy registered models as web services in Docker, list, show, call,
read the logs of and delete them (backends/local/services.py)."""

import datetime
import json
from pathlib import Path

import click

from amlocal.backends.registries import parse_model_id
from amlocal.cli.render import echo_json, format_value, table
from amlocal.cli.spec_options import parse_key_values
from amlocal.errors import UserInputError

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
_KINDS = {"local": "Local", "aci": "ACI", "aks": "AKS"}


def _services():
    from amlocal.backends.local.services import LocalServices

    return LocalServices()


def _describe(record):
    from amlocal.backends.local.service_settings import describe

    return describe(record)


def _when(timestamp):
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


@click.group()
def services():
    """Web services: registered models behind an entry script (init/run), in Docker.

    A service answers on http://127.0.0.1:PORT/score (this machine only) as Azure ML's
    inference server does; its scoring container has no network. Services outlive the command
    that deployed them and are recorded in the run history ($AMLOCAL_HOME).
    """


@services.command()
@click.argument("name")
@click.option("--model", "models", multiple=True, required=True, metavar="NAME[:VERSION]",
              help="A registered model (latest version without :VERSION). Repeatable.")
@click.option("--entry-script", required=True, help="Scoring script with init() and run(), "
                                                     "relative to --source-dir.")
@click.option("--source-dir", default=".", show_default=True,
              type=click.Path(exists=True, file_okay=False),
              help="Folder copied into the service (the entry script and what it imports).")
@click.option("--recipe", default="chainer", show_default=True,
              help="Environment recipe (docker/<recipe>) the image is built from.")
@click.option("--pip", "pip_packages", multiple=True, metavar="PKG",
              help="Extra pip package for the image. Repeatable.")
@click.option("--base-image", help="Base image for the recipe.")
@click.option("--env", "env_vars", multiple=True, metavar="KEY=VALUE",
              help="Environment variable of the scoring container. Repeatable.")
@click.option("--kind", type=click.Choice(sorted(_KINDS)),
              help="Which Azure service to mirror (all run locally) [default: local].")
@click.option("--port", type=click.IntRange(1, 65535),
              help="Port on 127.0.0.1 [default: a free one].")
@click.option("--auth", is_flag=True, help="Require `Authorization: Bearer <key>` (ACI/AKS).")
@click.option("--cpu-cores", type=click.FloatRange(min=0, min_open=True), help="CPU limit.")
@click.option("--memory-gb", type=click.FloatRange(min=0, min_open=True), help="Memory limit, GiB.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag. Repeatable.")
@click.option("--description", help="A description of the service.")
@click.option("--overwrite", is_flag=True, help="Replace a service of the same name.")
@click.option("--no-wait", is_flag=True, help="Return once the containers are started.")
@click.option("--timeout", type=click.IntRange(min=1), default=300, show_default=True,
              help="Seconds to wait for the service to answer.")
@click.option("--backend", type=click.Choice(["local", "azure"]), default="local",
              show_default=True, help="azure: deploy to Azure Container Instances.")
@click.option("--workspace-config", type=click.Path(), help="The Azure ML workspace's "
              "config.json (--backend azure) [default: found from this folder].")
@click.option("--sdk", type=click.Choice(["v1", "v2"]),
              help="--backend azure: v1 deploys to ACI (azureml-core), v2 to a managed online "
                   "endpoint (azure-ai-ml) [default: as for `amlocal run --sdk`].")
@click.option("--dry-run", is_flag=True, help="--backend azure: print what would be uploaded "
              "and sent; nothing is sent, no account needed.")
@json_option
def deploy(name, models, entry_script, source_dir, recipe, pip_packages, base_image, env_vars,
           kind, port, auth, cpu_cores, memory_gb, tags, description, overwrite, no_wait, timeout,
           backend, workspace_config, sdk, dry_run, as_json):
    """Deploy registered models as the web service NAME; wait until it is Healthy.

    \b
    Example:
      amlocal services deploy mnist-svc --model mnist --entry-script score.py \\
          --source-dir trainer --kind aci --auth
    """
    from amlocal.backends.base import EnvironmentSpec

    if backend == "local" and (dry_run or workspace_config):
        raise UserInputError("--dry-run and --workspace-config go with --backend azure")
    if backend == "local" and sdk:
        raise UserInputError("--sdk chooses the Azure ML SDK: use it with --backend azure")
    service_models = [parse_model_id(model) for model in models]
    environment = EnvironmentSpec(recipe=recipe, pip_packages=tuple(pip_packages),
                                  base_image=base_image)
    if backend == "azure":
        from amlocal.cli.services_azure import deploy_to_azure

        return deploy_to_azure(
            name, service_models, entry_script, source_dir, environment, kind=kind, port=port,
            dry_run=dry_run, workspace_config=workspace_config, timeout=timeout, as_json=as_json,
            sdk=sdk,
            cpu_cores=cpu_cores, memory_gb=memory_gb, auth_enabled=auth,
            tags=parse_key_values(tags, "--tag"), description=description,
            environment_variables=parse_key_values(env_vars, "--env"), overwrite=overwrite)
    kind = kind or "local"
    if auth and kind == "local":
        raise UserInputError("--auth needs --kind aci or aks: local services have no keys")
    local_services = _services()
    record = local_services.deploy(
        name, service_models, entry_script, source_dir, kind=_KINDS[kind],
        environment=environment, port=port, cpu_cores=cpu_cores, memory_gb=memory_gb,
        auth_enabled=auth or kind == "aks", env_vars=parse_key_values(env_vars, "--env"),
        tags=parse_key_values(tags, "--tag"), description=description, overwrite=overwrite,
        on_line=lambda line: click.echo(line, err=True))
    if not no_wait:
        record = local_services.wait(name, timeout_s=timeout)
    if as_json:
        echo_json(_describe(record))
    else:
        click.echo(f"Service {name}: {record['state']} at {_describe(record)['scoring_uri']}")
    if record["state"] not in ("Healthy", "Transitioning"):
        click.echo(f"Error: service {name} is {record['state']}: {record['error']} (see "
                   f"`amlocal services logs {name}`)", err=True)
        raise SystemExit(1)


@services.command("list")
@json_option
def list_services(as_json):
    """List the services with their state (looked up now) and scoring URI."""
    records = [_describe(record) for record in _services().list()]
    if as_json:
        echo_json(records)
        return
    if not records:
        click.echo("No services yet: deploy one with `amlocal services deploy`.")
        return
    click.echo(table([{**record, "models": ", ".join(record["models"])} for record in records],
                     [("NAME", "name"), ("KIND", "kind"), ("STATE", "state"),
                      ("SCORING URI", "scoring_uri"), ("MODELS", "models")]))


@services.command()
@click.argument("name")
@json_option
def show(name, as_json):
    """Show a service: state, scoring URI, models, entry script, resources."""
    record = _describe(_services().status(name))
    if as_json:
        echo_json(record)
        return
    for key, value in record.items():
        if key in ("created_at", "updated_at"):
            value = _when(value)
        if value not in (None, "", {}, []):
            click.echo(f"{key + ':':<14} {format_value(value)}")


@services.command()
@click.argument("name")
@click.option("--tail", type=click.IntRange(min=1), default=5000, show_default=True,
              help="How many of the last lines.")
@json_option
def logs(name, tail, as_json):
    """Print the scoring container's log (the server's and the entry script's output)."""
    text = _services().logs(name, tail)
    if as_json:
        echo_json({"name": name, "logs": text})
        return
    click.echo(text, nl=False)


@services.command()
@click.argument("name")
@click.option("--data", required=True,
              help="The request body (JSON text), as run() gets it; @FILE reads it from FILE.")
@click.option("--key", help="The key to send [default: the service's primary key].")
@json_option
def invoke(name, data, key, as_json):
    """POST --data to the service's /score and print the answer."""
    if data.startswith("@"):
        try:
            data = Path(data[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise UserInputError(f"--data {data}: cannot read it ({error})") from None
    try:
        json.loads(data)
    except ValueError as error:
        raise UserInputError(f"--data is not JSON: {error}") from None
    status, body = _services().invoke(name, data, key=key)
    if as_json:
        try:
            answer = json.loads(body)
        except ValueError:
            answer = body
        echo_json({"status": status, "response": answer})
    else:
        click.echo(body)
    if status != 200:
        if not as_json:
            click.echo(f"Error: the service answered HTTP {status}", err=True)
        raise SystemExit(1)


@services.command()
@click.argument("name")
@click.option("--regen", type=click.Choice(["Primary", "Secondary"]),
              help="Regenerate this key first (the old one stops working at once).")
@json_option
def keys(name, regen, as_json):
    """Print the service's primary and secondary keys (ACI and AKS services)."""
    local_services = _services()
    record = local_services.records.get(name)
    if record["kind"] == "Local":
        raise UserInputError(f"service {name!r} is a local service: local services have no keys")
    if regen:
        record = local_services.regen_key(name, regen)
    if as_json:
        echo_json(record["keys"])
        return
    click.echo(f"primary:   {record['keys']['primaryKey']}\n"
               f"secondary: {record['keys']['secondaryKey']}")


@services.command()
@click.argument("name")
@json_option
def delete(name, as_json):
    """Delete a service: its containers, files and record."""
    _services().delete(name)
    if as_json:
        echo_json({"name": name, "deleted": True})
        return
    click.echo(f"Deleted service {name}")
