"""The emulator's bearer tokens: JWTs (HS256) signed with a secret of this run history.

azureml-core decodes a token's `exp` without checking its signature (and refreshes a run token
when fewer than 95 s are left), so tokens are JWT-shaped; the emulator checks the signature, the
expiry and the scope. A token's `scope` says what it may do:

    "workspace"         everything in the workspace (what `amlocal.emulator.auth()` carries)
    "run:<run id>"      that run's URLs and its children's only (AZUREML_RUN_TOKEN in a run)
    "read:<run id>"     read that run's files (the signed content URLs handed out for downloads)

The secret is made once per $AMLOCAL_HOME (mode 0600) and kept, so tokens outlive a restart of
`amlocal serve` and no two homes accept each other's tokens.
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass

WORKSPACE_SCOPE = "workspace"
RUN_SCOPE = "run:"
READ_SCOPE = "read:"
ISSUER = "amlocal-emulator"
WORKSPACE_TOKEN_SECONDS = 24 * 3600
RUN_TOKEN_SECONDS = 3600  # azureml-core's run daemon renews a run token 95 s before it expires
READ_TOKEN_SECONDS = 3600
_HEADER = {"alg": "HS256", "typ": "JWT"}


class InvalidToken(Exception):
    """A token that is malformed, badly signed, expired, or of another scope."""


def _encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Claims:
    scope: str
    expires: int

    def allows_run(self, run_id, parent_of=None):
        """May this token act on run `run_id` (read or write its record, metrics, files)?

        A run's token may also act on that run's own children: `parent_of(run_id)` names the
        parent of run `run_id` (None when it has none, or when it does not exist yet).
        """
        if self.scope == WORKSPACE_SCOPE or self.scope == RUN_SCOPE + run_id:
            return True
        own_run = self.run_id
        return own_run is not None and parent_of is not None and parent_of(run_id) == own_run

    @property
    def run_id(self):
        """The run a run token is for (None for other tokens)."""
        return self.scope[len(RUN_SCOPE):] if self.scope.startswith(RUN_SCOPE) else None

    def allows_reading_run(self, run_id):
        return self.allows_run(run_id) or self.scope == READ_SCOPE + run_id

    @property
    def is_workspace(self):
        return self.scope == WORKSPACE_SCOPE


class TokenIssuer:
    """Issues and checks the tokens of one run history (its secret lives in `secret_path`)."""

    def __init__(self, secret_path):
        self._secret = _load_or_create_secret(secret_path)

    def issue(self, scope, seconds=WORKSPACE_TOKEN_SECONDS):
        now = int(time.time())
        payload = {"iss": ISSUER, "scope": scope, "iat": now, "exp": now + int(seconds)}
        signing_input = ".".join(_encode(json.dumps(part, separators=(",", ":")).encode())
                                 for part in (_HEADER, payload))
        return f"{signing_input}.{self._signature(signing_input)}"

    def verify(self, token):
        """The token's Claims; InvalidToken if it is not one of ours or has expired."""
        parts = token.split(".") if isinstance(token, str) and token.isascii() else []
        if len(parts) != 3:
            raise InvalidToken("the token is not a JWT")
        signing_input = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._signature(signing_input), parts[2]):
            raise InvalidToken("the token's signature is not valid")
        try:
            payload = json.loads(_decode(parts[1]))
            scope, expires = payload["scope"], payload["exp"]
        except (ValueError, KeyError, TypeError):
            raise InvalidToken("the token's claims cannot be read") from None
        if not isinstance(scope, str) or not isinstance(expires, int):
            raise InvalidToken("the token's claims cannot be read")
        if expires <= time.time():
            raise InvalidToken("the token has expired")
        return Claims(scope=scope, expires=expires)

    def _signature(self, signing_input):
        return _encode(hmac.new(self._secret, signing_input.encode("ascii"), hashlib.sha256).digest())


def _load_or_create_secret(path):
    """The secret at `path`, made (0600) by whichever process comes first: it is written whole
    under a name of its own and then linked into place, so no process reads half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(32))
                handle.flush()
                os.fsync(handle.fileno())
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            os.unlink(temporary)
    secret = path.read_bytes()
    if len(secret) != 32:
        raise OSError(f"the emulator's token secret {path} is damaged: remove it (tokens issued "
                      "before then stop working)")
    return secret
