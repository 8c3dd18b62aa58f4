"""The local backend: runs on this machine in Docker (or as a subprocess), history in SQLite."""

from amlocal.backends.local.backend import LocalBackend, LocalRunHandle

__all__ = ["LocalBackend", "LocalRunHandle"]
