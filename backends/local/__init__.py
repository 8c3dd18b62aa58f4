"""The local backend: runs on this machine in Docker (or as a subprocess), history in SQLite.

Its names are imported on first use (PEP 562), so that `amlocal.backends.history.store` and the
other modules of this package can be imported without the backend and what it brings in."""

__all__ = ["LocalBackend", "LocalRunHandle"]


def __getattr__(name):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from amlocal.backends.local import backend

    return getattr(backend, name)
