"""A run's logs as `run.wait_for_completion(show_output=True)` follows them.

azureml-core polls `GET .../runs/{id}/details`, takes the last of its `logFiles` (the image build
log while the run prepares, then the driver log) and GETs that URL whole on every poll, printing
the lines it has not printed yet; it stops once the details say the run has ended, without a last
read. A run that ends between two polls would so lose its last lines. Azure avoids that by a
Finalizing status that lasts longer than a poll; here a run ends in milliseconds, so the emulator
keeps it Finalizing for a client that follows its logs until that client has read them whole once
after the end (or the longest poll interval has passed): `reported_status`.

The log URLs carry a read token for that run (a SAS, on Azure) and are served over plain http.
"""

import threading
import time
from urllib.parse import quote

from starlette.responses import StreamingResponse

from amlocal.backends import status as run_status
from amlocal.backends.history.store import BUILD_LOG, DRIVER_LOG
from amlocal.errors import RunNotFoundError, UserInputError
from amlocal.service.errors import ServiceError, not_found
from amlocal.service.tokens import InvalidToken
from amlocal.service.wire import operation, read_token

LOGS = "/amlocal/logs/{run_id}/{path:path}"
SERVED_LOGS = (BUILD_LOG, DRIVER_LOG)
CHUNK_BYTES = 1 << 20
# azureml-core waits at most AZUREML_RUN_POLLING_INTERVAL_MAX (60 s) between polls.
FOLLOW_HOLD_S = 75.0
_PREPARING = (run_status.NOT_STARTED, run_status.STARTING, run_status.PREPARING)

# {(history, run id): when a log of that run was last read while it was live}. In memory: a
# restarted emulator forgets who followed what, and a follower then misses at most a last poll.
_followed = {}
_followed_lock = threading.Lock()


def _key(service, run_id):
    return str(service.home), run_id


def _log_url(service, run_id, name, token):
    return f"{service.endpoint}/amlocal/logs/{quote(run_id)}/{quote(name)}?sig={token}"


def log_files(service, details, file_names):
    """{log name: URL} for a run's details: the build log while it prepares (so that is what
    azureml-core streams then), the driver log from then on (and the build log if it has one).
    A log that does not exist yet answers 404, which azureml-core reads as empty."""
    token = read_token(service, details["id"])
    if details["status"] in _PREPARING:
        names = [BUILD_LOG]
    else:
        names = [name for name in SERVED_LOGS
                 if name == DRIVER_LOG or name in file_names]
    return {name: _log_url(service, details["id"], name, token) for name in names}


def reported_status(service, details):
    """The status the details route reports: Finalizing for an ended run that someone followed
    and has not read whole since it ended (see the module docstring), else the run's own."""
    status = details["status"]
    if not run_status.is_terminal(status):
        return status
    with _followed_lock:
        followed_at = _followed.get(_key(service, details["id"]))
    if followed_at is not None and time.monotonic() - followed_at < FOLLOW_HOLD_S:
        return run_status.FINALIZING
    return status


def _note_read(service, run_id):
    try:
        live = not run_status.is_terminal(service.store.get_status(run_id))
    except RunNotFoundError:
        raise not_found(f"run {run_id!r} was not found") from None
    now = time.monotonic()
    with _followed_lock:
        for key, at in list(_followed.items()):  # forget followers long gone
            if now - at >= FOLLOW_HOLD_S:
                del _followed[key]
        if live:
            _followed[_key(service, run_id)] = now
        else:
            _followed.pop(_key(service, run_id), None)  # this read has the whole log


@operation(LOGS, ["GET"], auth="public")
def read_log(call):
    try:
        claims = call.service.tokens.verify(call.query.get("sig", ""))
    except InvalidToken as error:
        raise ServiceError(403, "AuthorizationFailure",
                           f"the log URL's signature is not valid: {error}") from None
    if not claims.allows_reading_run(call.run_id):
        raise ServiceError(403, "AuthorizationFailure", "the log URL's signature is for another run")
    name = call.params["path"]
    if name not in SERVED_LOGS:
        raise not_found(f"{name!r} is not a log of run {call.run_id}")
    _note_read(call.service, call.run_id)
    try:
        handle = call.service.store.open_file(call.run_id, name)
    except UserInputError:
        raise not_found(f"run {call.run_id} has no {name} yet") from None
    return StreamingResponse(_chunks(handle), media_type="text/plain; charset=utf-8")


def _chunks(handle):
    with handle:
        yield from iter(lambda: handle.read(CHUNK_BYTES), b"")


ROUTES = [read_log]
