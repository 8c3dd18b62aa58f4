"""The Azure backend's SDK v2 path (`--sdk v2`): the same RunSpec as a command job (a sweep as a
sweep job), through azure-ai-ml.

    spec --translate_v2 (pure)--> azure-ai-ml entities --AzureSessionV2 (the seam)--> Azure ML

AzureBackend (backend.py) calls these where its SDK is v2; they do what its v1 methods do (the
compute target made sure of, the inputs uploaded, the job submitted, the run recorded in the local
history through the backend, under the job's name with its studio URL), and the dry run touches
no network, no account and needs no config.json. Nothing here imports azure-ai-ml at import time.
"""

from amlocal.backends.azure.errors import require_v2_sdk
from amlocal.backends.base import LogLine, StatusChanged, ignore_event
from amlocal.backends.history.store import new_run_id


def translate(backend, spec, datastore=None, sweep=None):
    """The translate_v2.Submission of a validated spec (of a sweep over it, with `sweep`)."""
    require_v2_sdk()
    from amlocal.backends.azure import translate_v2

    local_target = backend._local_target(spec.compute)
    datastore = datastore or translate_v2.DEFAULT_DATASTORE
    if sweep is not None:
        return translate_v2.translate_sweep(spec, sweep, local_target=local_target,
                                            datastore=datastore)
    return translate_v2.translate(spec, local_target=local_target, datastore=datastore)


def dry_run(backend, spec, sweep=None):
    """What submit (or submit_sweep) would send, as JSON-ready data; touches no network."""
    submission = translate(backend, spec, sweep=sweep)
    return backend._dry_run_document(spec, submission.describe())


def submit(backend, spec, on_event=ignore_event, sweep=None):
    """Submit a validated spec as a command job (a sweep job, with `sweep`); its handle."""
    from amlocal.backends.history.snapshot import snapshot_files

    files = snapshot_files(spec.source_dir)
    translate(backend, spec, sweep=sweep)  # a spec Azure cannot take is refused before any request
    run_id = new_run_id(spec.experiment)

    def progress(line):
        on_event(LogLine(run_id, "build", line))

    session = backend.session()
    workspace = session.workspace_info()
    progress(f"Workspace {workspace['workspace_name']} (resource group "
             f"{workspace['resource_group']}, subscription {workspace['subscription_id']})")
    datastore = session.default_datastore()
    submission = translate(backend, spec, datastore=datastore, sweep=sweep)
    backend._ensure_compute(session, submission.compute, workspace, progress)
    for upload in submission.uploads:
        progress(f"Uploading input {upload.name} ({upload.source}) to "
                 f"{upload.datastore}/{upload.target_path}")
        session.upload_input(upload)
    what = "a sweep job" if sweep is not None else "a command job"
    progress(f"Submitting {spec.script} as {what} to experiment {spec.experiment} on "
             f"{submission.compute.name} (azure-ai-ml)")
    with submission.build_context() as entity:
        entity.name = run_id
        result = session.submit_job(entity, spec.experiment)
    handle = backend._record(spec, submission, result, workspace, datastore, files=files,
                             sweep=sweep)
    progress(f"Studio: {result.get('portal_url')}")
    on_event(StatusChanged(handle.id, backend.store.get_status(handle.id)))
    return handle
