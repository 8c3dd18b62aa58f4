"""`amlocal models ...`: register models from runs or local files, list, show, download, delete."""

import datetime

import click

from amlocal.backends.registries import collect_local_files, parse_model_id
from amlocal.cli.backends import backends
from amlocal.cli.spec_options import parse_key_values
from amlocal.cli.render import echo_json, format_value, table
from amlocal.errors import UserInputError

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _registry():
    """The model registry of the default backend (the factory's: see cli/backends.py)."""
    return backends().get().models()


def _filters(values, option):
    """azureml-core's filter list from repeated KEY or KEY=VALUE options."""
    filters = []
    for value in values:
        key, separator, text = value.partition("=")
        if not key:
            raise UserInputError(f"{option} expects KEY or KEY=VALUE, got {value!r}")
        filters.append([key, text] if separator else key)
    return filters


def _when(record):
    return datetime.datetime.fromtimestamp(record["created_at"]).strftime("%Y-%m-%d %H:%M:%S")


def _source(record):
    if record.get("run_id"):
        return f"run {record['run_id']}: {record['run_path']}"
    return "local files"


@click.group()
def models():
    """Registered models: named, versioned copies of model files ($AMLOCAL_HOME/models).

    A model is registered from a run's files (what run.register_model does) or from local files
    (Model.register), and gets the next version of its name: 1, 2, 3, ... Its id is NAME:VERSION.
    """


@models.command()
@click.option("--name", required=True, help="Model name: letters, digits, '-', '_', '.'.")
@click.option("--run", "run_id", help="Register from this run's files.")
@click.option("--path", "model_path",
              help="With --run: a run file or folder, e.g. outputs/model.npz or outputs "
                   "(see `amlocal runs files RUN`) [default: NAME, as run.register_model].")
@click.option("--from-path", "local_path", type=click.Path(),
              help="Register a local file or folder instead.")
@click.option("--child-path", "child_paths", multiple=True, metavar="PATH",
              help="With a --from-path folder: only this file or folder of it. Repeatable.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag. Repeatable.")
@click.option("--property", "properties", multiple=True, metavar="KEY=VALUE",
              help="Property (immutable once set). Repeatable.")
@click.option("--description", help="A description of the model.")
@click.option("--framework", help="Model framework, e.g. ScikitLearn, PyTorch [default: Custom].")
@click.option("--framework-version", help="Version of the framework (needs --framework).")
@json_option
def register(name, run_id, model_path, local_path, child_paths, tags, properties, description,
             framework, framework_version, as_json):
    """Register a model from a run (--run) or from local files (--from-path)."""
    if (run_id is None) == (local_path is None):
        raise UserInputError("give either --run RUN (with --path) or --from-path LOCAL_PATH")
    if run_id is None and model_path is not None:
        raise UserInputError("--path names a run's file: use it with --run (or use --from-path)")
    if run_id is not None and child_paths:
        raise UserInputError("--child-path goes with --from-path")
    metadata = dict(tags=parse_key_values(tags, "--tag"), properties=parse_key_values(properties, "--property"),
                    description=description, framework=framework,
                    framework_version=framework_version)
    registry = _registry()
    if run_id is not None:
        record = registry.register_from_run(run_id, name, model_path, **metadata)
    else:
        record = registry.register(name, collect_local_files(local_path, child_paths), **metadata)
    if as_json:
        echo_json(record)
        return
    click.echo(f"Registered model {record['id']} ({_source(record)}): {record['path']}")


@models.command("list")
@click.option("--name", help="Only models of this name.")
@click.option("--tag", "tags", multiple=True, metavar="KEY[=VALUE]",
              help="Only models with this tag (and value). Repeatable: all must match.")
@click.option("--property", "properties", multiple=True, metavar="KEY[=VALUE]",
              help="Only models with this property (and value). Repeatable.")
@click.option("--run", "run_id", help="Only models registered from this run.")
@click.option("--framework", help="Only models of this framework.")
@click.option("--latest", is_flag=True, help="Only the latest version of each name.")
@json_option
def list_models(name, tags, properties, run_id, framework, latest, as_json):
    """List registered models, newest first."""
    records = _registry().list(name=name, tags=_filters(tags, "--tag"),
                               properties=_filters(properties, "--property"), run_id=run_id,
                               latest=latest, framework=framework)
    if as_json:
        echo_json(records)
        return
    if not records:
        click.echo("No models match." if (name or tags or properties or run_id or framework)
                   else "No models yet: register one with `amlocal models register`.")
        return
    rows = []
    for record in records:
        if "corrupted" in record:
            rows.append({"name": record["name"], "version": record["version"],
                         "source": f"DAMAGED: {record['corrupted']}"})
            continue
        rows.append({"name": record["name"], "version": record["version"],
                     "framework": record["framework"], "created": _when(record),
                     "source": _source(record),
                     "tags": ", ".join(f"{key}={format_value(value)}"
                                       for key, value in record["tags"].items())})
    click.echo(table(rows, [("NAME", "name"), ("VERSION", "version"), ("FRAMEWORK", "framework"),
                            ("CREATED", "created"), ("SOURCE", "source"), ("TAGS", "tags")]))


@models.command()
@click.argument("model_id", metavar="NAME[:VERSION]")
@json_option
def show(model_id, as_json):
    """Show a model (its latest version without :VERSION): source, tags, properties, files."""
    name, version = parse_model_id(model_id)
    record = _registry().get(name, version)
    if as_json:
        echo_json(record)
        return
    lines = [("Model", record["id"]), ("Created", _when(record)), ("Source", _source(record)),
             ("Experiment", record["experiment_name"]), ("Description", record["description"]),
             ("Framework", " ".join(filter(None, (record["framework"],
                                                   record["framework_version"])))),
             ("Tags", record["tags"] or None), ("Properties", record["properties"] or None),
             ("Path", record["path"]),
             ("Size", f"{record['size_bytes']} bytes in {len(record['files'])} file(s)")]
    for label, value in lines:
        if value not in (None, ""):
            click.echo(f"{label + ':':<13} {format_value(value)}")
    click.echo()
    for entry in record["files"]:
        click.echo(entry["path"])


@models.command()
@click.argument("model_id", metavar="NAME[:VERSION]")
@click.option("-o", "--output-dir", default=".", show_default=True,
              type=click.Path(file_okay=False),
              help="Where to put the model (it keeps its file or folder name there).")
@click.option("--exist-ok", is_flag=True, help="Replace files that are already there.")
@json_option
def download(model_id, output_dir, exist_ok, as_json):
    """Download a model (its latest version without :VERSION); prints where it is."""
    name, version = parse_model_id(model_id)
    path = _registry().download(name, version, output_dir, exist_ok=exist_ok)
    if as_json:
        echo_json({"path": str(path)})
        return
    click.echo(str(path))


@models.command()
@click.argument("model_id", metavar="NAME:VERSION")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="Add or replace a tag. Repeatable.")
@click.option("--remove-tag", "remove_tags", multiple=True, metavar="KEY",
              help="Remove a tag. Repeatable.")
@click.option("--property", "properties", multiple=True, metavar="KEY=VALUE",
              help="Add a property (existing ones cannot change). Repeatable.")
@click.option("--description", help="Replace the description.")
@json_option
def update(model_id, tags, remove_tags, properties, description, as_json):
    """Change a model version's tags or description, or add properties."""
    name, version = parse_model_id(model_id, version_required=True)
    record = _registry().update(name, version, add_tags=parse_key_values(tags, "--tag"),
                                remove_tags=list(remove_tags),
                                add_properties=parse_key_values(properties, "--property"),
                                description=description)
    if as_json:
        echo_json(record)
        return
    click.echo(f"Updated model {record['id']}")


@models.command()
@click.argument("model_id", metavar="NAME:VERSION")
def delete(model_id):
    """Delete one version of a model, its record and its files (its number is not reused)."""
    name, version = parse_model_id(model_id, version_required=True)
    _registry().delete(name, version)
    click.echo(f"Deleted model {name}:{version}")
