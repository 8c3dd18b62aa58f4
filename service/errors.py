"""Azure's error bodies: what the service answers when it refuses a request.

Azure ML's services answer `{"error": {"code": ..., "message": ...}}` (ARM and the data plane
alike; azureml-core reads `error.code` and `error.message` from it), so an SDK call that fails
here raises the same exception, with the same words, as it would against Azure.
"""

from starlette.responses import JSONResponse

from amlocal.errors import RunNotFoundError, RunRecordCorruptedError, UserInputError
from amlocal.validation import one_line


class ServiceError(Exception):
    """A refusal, rendered as Azure's error body with its HTTP status."""

    def __init__(self, status, code, message, details=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = one_line(message)
        self.details = details or []


def not_found(what):
    return ServiceError(404, "ResourceNotFound", what)


def bad_request(message, code="UserError"):
    return ServiceError(400, code, message)


def error_response(status, code, message, details=()):
    body = {"error": {"code": code, "message": message}}
    if details:
        body["error"]["details"] = list(details)
    return JSONResponse(body, status_code=status)


def as_service_error(error):
    """amlocal's own errors as the service's: bad input is a 400, a missing run a 404, a damaged
    record a 500 that says so (it is never served)."""
    if isinstance(error, ServiceError):
        return error
    if isinstance(error, RunNotFoundError):
        return ServiceError(404, "ResourceNotFound", str(error))
    if isinstance(error, RunRecordCorruptedError):
        return ServiceError(500, "ServiceError", str(error))
    if isinstance(error, UserInputError):
        return ServiceError(400, "UserError", str(error))
    return None
