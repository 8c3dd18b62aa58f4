"""The one seam to the network: an opener, ``url -> bytes``, that honours the host's CA bundle."""

from __future__ import annotations

import os
import ssl
import urllib.request
from typing import Callable

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

Opener = Callable[[str], bytes]


def default_ssl_context() -> ssl.SSLContext:
    """An SSL context trusting the CA bundle named by SSL_CERT_FILE, REQUESTS_CA_BUNDLE or PIP_CERT.

    The first of those that names a readable bundle wins (so a TLS-intercepting proxy whose CA is
    in that bundle works); otherwise the platform default context.
    """
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
        cafile = os.environ.get(var)
        if cafile and os.path.isfile(cafile):
            try:
                return ssl.create_default_context(cafile=cafile)
            except (ssl.SSLError, OSError):
                continue
    return ssl.create_default_context()


class UrllibOpener:
    """The default `opener`: GET `url` with urllib and return the body.

    timeout applies to the connection and to each read (so an unreachable host fails within
    about `timeout` seconds, while a slow but steady download is not cut off). Raises on HTTP
    errors (urllib.error.HTTPError), on connection errors, and if the body exceeds `max_bytes`.
    """

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
        context: ssl.SSLContext | None = None,
    ):
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._context = context

    def __call__(self, url: str) -> bytes:
        if self._context is None:
            self._context = default_ssl_context()
        request = urllib.request.Request(url, headers={"User-Agent": "amlocal-datasets/1"})
        chunks: list[bytes] = []
        total = 0
        with urllib.request.urlopen(request, timeout=self.timeout, context=self._context) as resp:
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                if total > self.max_bytes:
                    raise ValueError(f"response from {url} exceeds {self.max_bytes} bytes")
                chunks.append(chunk)
        return b"".join(chunks)
