"""The Azure ML dry run: asked of a backend in one place, shown as text in one place.

The backend returns the document (what would be submitted, JSON-ready data); whoever shows it
renders it: the command line with `dry_run_text` (or as JSON), and `Experiment.submit(config,
dry_run=True)`, the SDK's edge, prints the same text."""

import json

import click

from amlocal.cli.render import echo_json


def dry_run(backend, spec, sweep=None):
    """What `backend` would submit for `spec`, or for a sweep (HyperDriveConfig._sweep()) whose
    child runs `spec` is the template of; UserInputError for a backend that has no dry run."""
    if sweep is not None:
        return backend.dry_run_sweep(spec, sweep)
    return backend.dry_run(spec)


def show_dry_run(backend, spec, sweep=None, as_json=False):
    """--dry-run: print what `backend` would submit (see dry_run), as text or as one JSON line."""
    document = dry_run(backend, spec, sweep)
    if as_json:
        echo_json(document)
    else:
        click.echo(dry_run_text(document))


def dry_run_text(document):
    """A dry run's document as text for a terminal; --json gives the document itself."""
    if "job" in document:
        return _v2_dry_run_text(document)
    script = f"Script:          {document['script']} {' '.join(document['arguments'])}".rstrip()
    details = [f"Tags:            {json.dumps(document['tags'])}"] if document["tags"] else []
    distribution = _distribution_line(document["run_configuration"])
    if distribution:
        details.append(f"Distribution:    {distribution}")
    lines = _submission_lines(
        document, "submission", "Source folder", [script, *details],
        lambda provisioning: ["  " + line for line in json.dumps(provisioning,
                                                                 indent=2).splitlines()],
        "mounted ($AZUREML_DATAREFERENCE_<name>)")
    environment = document["environment"]
    lines += _environment_lines(environment)
    if document.get("hyperdrive"):
        lines += ["", "HyperDrive configuration (azureml-train-core's HyperDriveConfig over the "
                      "run configuration below, one child run per sampled configuration):", ""]
        lines += json.dumps(document["hyperdrive"], indent=2).splitlines()
    run_configuration = _dockerfile_shown_above(document["run_configuration"], environment)
    lines += ["", "Run configuration, as azureml-core serializes it into the run definition:", ""]
    lines += json.dumps(run_configuration, indent=2).splitlines()
    return _with_notes(lines, document)


def _v2_dry_run_text(document):
    """An SDK v2 dry run (translate_v2.Submission.describe(), with its workspace) as text: the
    jobs as azure-ai-ml serializes them, in the YAML `az ml job create --file` reads."""
    lines = _submission_lines(
        document, "job", "Code", [f"Command:         {document['command']}"],
        lambda provisioning: ["    " + line for line in _yaml(provisioning).splitlines()],
        "mounted read-only (${{inputs.<name>}})")
    environment = document["environment"]
    lines += _environment_lines(environment, f" (version {environment['version']})")
    if document.get("sweep_job"):
        lines += ["", "Sweep job, as azure-ai-ml serializes it (its trial is the command job "
                      "below, one per sampled configuration):", ""]
        lines += _yaml(document["sweep_job"]).splitlines()
    lines += ["", "Command job, as azure-ai-ml serializes it:", ""]
    lines += _yaml(document["job"]).splitlines()
    return _with_notes(lines, document)


def _submission_lines(document, noun, source_label, command_lines, provisioning_lines, mounted):
    """The lines both SDKs' dry runs open with: the workspace, experiment, source folder and
    `command_lines`; the compute target (its provisioning as `provisioning_lines` renders it); the
    inputs and how the run reads them (`mounted`)."""
    snapshot = document.get("snapshot", {})
    lines = [f"Dry run: nothing is sent to Azure ML. The {noun}, as {document['sdk']} makes it:",
             "", _workspace_line(document.get("workspace"), "submitting"),
             f"Experiment:      {document['experiment']}",
             f"{source_label + ':':<17}{document['source_directory']} (snapshot of "
             f"{snapshot.get('files', '?')} files, {snapshot.get('bytes', 0) / 2**20:.2f} MB)",
             *command_lines]
    compute = document["compute"]
    lines += ["", f"Compute target:  {compute['name']} (AmlCompute)"]
    if compute["provisioning"] is None:
        lines.append(f"  {compute['note']}")
    else:
        lines.append(f"  created if the workspace lacks it, from {compute['from']}, with:")
        lines += provisioning_lines(compute["provisioning"])
    if document["uploads"]:
        lines += ["", f"Inputs, uploaded first, then {mounted}:"]
        for upload in document["uploads"]:
            lines.append(f"  {upload['input']}: {upload['from']} -> "
                         f"{upload['datastore']}/{upload['path_on_datastore']}")
    return lines


def _with_notes(lines, document):
    if document["notes"]:
        lines = lines + ["", "Notes:"] + [f"  - {note}" for note in document["notes"]]
    return "\n".join(lines)


def _distribution_line(configuration):
    """The distributed job a run configuration asks for, in words (None: not distributed); the
    configuration printed below has its mpi or pytorch section."""
    nodes = configuration.get("nodeCount") or 1
    if configuration.get("communicator") == "IntelMpi":
        per_node = (configuration.get("mpi") or {}).get("processCountPerNode") or 1
        return (f"mpi (MpiConfiguration): {per_node} process(es) on each of {nodes} node(s), "
                f"{per_node * nodes} ranks started by mpirun")
    if configuration.get("framework") == "PyTorch":
        pytorch = configuration.get("pytorch") or {}
        return (f"pytorch (PyTorchConfiguration, {pytorch.get('communicationBackend')}): "
                f"{pytorch.get('processCount') or nodes} process(es) over {nodes} node(s)")
    return None


def _yaml(data):
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1 << 16).rstrip("\n")


def _environment_lines(environment, version=""):
    return (["", f"Environment {environment['name']}{version}, which Azure builds from this "
                 "Dockerfile:", ""]
            + ["    " + line if line else "" for line in environment["dockerfile"].splitlines()])


def _dockerfile_shown_above(part, environment):
    """A copy of `part` (holding an "environment") whose Dockerfile, printed above it already,
    is a pointer to it."""
    part = json.loads(json.dumps(part))
    docker = part.get("environment", {}).get("docker", {})
    if docker.get("baseDockerfile") == environment["dockerfile"]:
        docker["baseDockerfile"] = "<the Dockerfile above; --json shows it in place>"
    return part


def _workspace_line(workspace, action):
    return "Workspace:       " + (
        f"{workspace['workspace_name']} (resource group {workspace['resource_group']}, "
        f"subscription {workspace['subscription_id']}) from {workspace['config_file']}"
        if workspace else f"none: no config.json found ({action} needs one)")


def deployment_dry_run_text(document):
    """A deployment's dry run (deploy_v1.Deployment.describe(), with its workspace) as text."""
    lines = [f"Dry run: nothing is sent to Azure ML. The deployment, as {document['sdk']} makes "
             "it:", "", _workspace_line(document.get("workspace"), "deploying"),
             f"Service:         {document['service']} ({document['compute_type']})",
             f"Models:          {', '.join(document['models'])}",
             f"Entry script:    {document['entry_script']} in {document['source_directory']}",
             "", "Uploaded first (workspace artifacts):"]
    for upload in document["uploads"]:
        size = (f" ({upload['files']} files, {upload['bytes'] / 2**20:.2f} MB)"
                if "files" in upload else "")
        lines.append(f"  {upload['what']}: {upload['from']}{size}")
    environment = document["environment"]
    lines += _environment_lines(environment)
    payload = json.loads(json.dumps(document["payload"]))
    payload["environmentImageRequest"] = _dockerfile_shown_above(
        payload["environmentImageRequest"], environment)
    lines += ["", "Request body azureml-core sends to create the service:", ""]
    lines += json.dumps(payload, indent=2).splitlines()
    if document["notes"]:
        lines += ["", "Notes:"] + [f"  - {note}" for note in document["notes"]]
    return "\n".join(lines)


def online_deployment_dry_run_text(document):
    """An SDK v2 deployment's dry run (deploy_v2.OnlineDeployment.describe(), with its
    workspace) as text: the endpoint and the deployment as azure-ai-ml serializes them."""
    lines = [f"Dry run: nothing is sent to Azure ML. The deployment, as {document['sdk']} makes "
             "it:", "", _workspace_line(document.get("workspace"), "deploying"),
             f"Service:         {document['service']} ({document['compute_type']})",
             f"Model:           {', '.join(document['models'])}",
             f"Entry script:    {document['entry_script']} in {document['source_directory']}"]
    environment = document["environment"]
    lines += _environment_lines(environment, f" (version {environment['version']})")
    lines += ["", "Managed online endpoint, as azure-ai-ml serializes it:", ""]
    lines += _yaml(document["endpoint"]).splitlines()
    lines += ["", "Managed online deployment (all the endpoint's traffic), as azure-ai-ml "
                  "serializes it:", ""]
    lines += _yaml(document["deployment"]).splitlines()
    return _with_notes(lines, document)
