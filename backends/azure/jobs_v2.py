"""The Azure backend's SDK v2 path (`--sdk v2`): the same RunSpec as a command job (a sweep as a
sweep job), through azure-ai-ml.

    spec --translate_v2 (pure)--> azure-ai-ml entities --AzureSessionV2 (the seam)--> Azure ML

AzureBackend (backend.py) calls these where its SDK is v2; they do what its v1 methods do (the
compute target made sure of, the inputs uploaded, the job submitted, the run recorded in the local
history through the backend, under the job's name with its studio URL), and the dry run touches
no network, no account and needs no config.json. Nothing here imports azure-ai-ml at import time.
"""

from amlocal.backends.azure.errors import require_v2_sdk
from amlocal.backends.base import ignore_event


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

    def send(session, submission, run_id, progress):
        what = "a sweep job" if sweep is not None else "a command job"
        progress(f"Submitting {spec.script} as {what} to experiment {spec.experiment} on "
                 f"{submission.compute.name} (azure-ai-ml)")
        with submission.build_context() as entity:
            entity.name = run_id
            return session.submit_job(entity, spec.experiment)

    return backend._send(spec, lambda datastore: translate(backend, spec, datastore, sweep),
                         send, on_event, sweep=sweep)
