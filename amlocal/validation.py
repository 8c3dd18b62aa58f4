"""What a user may give amlocal: Azure ML's limits on tags and properties, bounds on numbers.

Checked at submission (the CLI and the SDK-shaped classes end in the same checks), so that bad
input is one line of error before anything is created, and the run history never holds what a
report, a terminal or Azure ML could not take.
"""

import errno
import math
import os
import re
import reprlib
from pathlib import Path

from amlocal.errors import UserInputError

# Azure ML's service limits on a run's tags and properties. The in-run Run API
# (backends/local/runtime/amlocal_run.py) enforces the same for what a script sets; it runs where
# amlocal is not installed, so it keeps its own copy of these three numbers.
MAX_TAGS = 50
MAX_KEY_LENGTH = 100
MAX_VALUE_LENGTH = 1000
# SQLite's INTEGER, and Azure's int64: the largest count, size or duration anything keeps.
MAX_INT = 2**63 - 1

# Control characters, and the lone surrogates Python makes of bytes that are not UTF-8 (a
# command line's invalid UTF-8 arrives that way).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")

# Azure ML's rule for experiment names.
_EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")

_shown = reprlib.Repr()
_shown.maxstring = _shown.maxother = 40


def shown(value):
    """A value as an error message shows it: repr'd, and cut short when long."""
    return _shown.repr(value)


def check_text(text, what):
    """Refuse text that is not printable Unicode: control characters, or bytes that were not
    UTF-8. `what` names it in the message ("tag 'a'", ...)."""
    bad = _UNPRINTABLE.search(text)
    if bad is None:
        return text
    character = bad.group()
    if "\ud800" <= character <= "\udfff":
        problem = "bytes that are not UTF-8"
    else:
        problem = f"the control character U+{ord(character):04X}"
    raise UserInputError(f"{what} holds {problem}: use printable UTF-8 text")


def check_experiment_name(name):
    """UserInputError unless `name` is a valid Azure ML experiment name."""
    if not isinstance(name, str) or not _EXPERIMENT_NAME.match(name):
        raise UserInputError(f"invalid experiment name {name!r}: 1-255 letters, digits, '_' or "
                             "'-', starting with a letter or digit")


def one_line(text):
    """`text` with its control characters and undecodable bytes written as escapes (\\n,
    \\udcff): an error message that quotes what a user gave stays one line."""
    return _UNPRINTABLE.sub(lambda found: repr(found.group())[1:-1], text)


def usable_path(path, what):
    """`path` as a Path, or UserInputError where no file can have that name (a NUL, a name too
    long) or it cannot be looked at; a path that does not exist is usable (the caller says so)."""
    try:
        text = os.fspath(path)
    except TypeError:
        raise UserInputError(f"{what} must be a path, got {shown(path)}") from None
    if "\x00" in str(text):
        raise UserInputError(f"{what} {shown(text)} holds a NUL character")
    try:
        os.stat(text)
    except OSError as error:
        if error.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise UserInputError(f"{what} {shown(text)}: {error.strerror}") from None
    return Path(text)


def check_key_values(pairs, kind):
    """{key: value} as Azure ML takes a run's tags or properties (`kind`: "tag", "property"):
    at most 50, string keys of 1-100 characters and values of up to 1,000, printable UTF-8.
    A value of None is the empty string (run.tag(key) with no value). Returns the checked copy."""
    if pairs is None:
        return {}
    if not isinstance(pairs, dict):
        raise UserInputError(f"{kind} values must be a dict of KEY: VALUE, got {type(pairs).__name__}")
    if len(pairs) > MAX_TAGS:
        raise UserInputError(f"{len(pairs)} {kind} values given; Azure ML allows at most {MAX_TAGS}")
    checked = {}
    for key, value in pairs.items():
        key, value = str(key), "" if value is None else str(value)
        if not key:
            raise UserInputError(f"a {kind} needs a key: got an empty one")
        if len(key) > MAX_KEY_LENGTH:
            raise UserInputError(f"{kind} key {shown(key)} has {len(key)} characters; Azure ML "
                                 f"allows at most {MAX_KEY_LENGTH}")
        if len(value) > MAX_VALUE_LENGTH:
            raise UserInputError(f"{kind} {shown(key)} has a value of {len(value)} characters; "
                                 f"Azure ML allows at most {MAX_VALUE_LENGTH}")
        check_text(key, f"{kind} key {shown(key)}")
        check_text(value, f"the value of {kind} {shown(key)}")
        checked[key] = value
    return checked


def bounded_int(name, value, minimum=None, maximum=MAX_INT):
    """`value` if it is a whole number in [minimum, maximum] (minimum None: no lower bound),
    else UserInputError naming it."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise UserInputError(f"{name} must be a whole number, got {shown(value)}")
    if minimum is None and value > maximum:
        raise UserInputError(f"{name} must be at most {maximum}, got {shown(value)}")
    if minimum is not None and not minimum <= value <= maximum:
        raise UserInputError(f"{name} must be between {minimum} and {maximum}, got {shown(value)}")
    return value


def bounded_float(name, value, minimum, maximum):
    """`value` as a float if it is a finite number in [minimum, maximum], else UserInputError."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise UserInputError(f"{name} must be a number, got {shown(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not (math.isfinite(number) and minimum <= number <= maximum):
        raise UserInputError(f"{name} must be a number between {minimum} and {maximum}, "
                             f"got {shown(value)}")
    return number


def setting(name, default, minimum, maximum, whole=False):
    """amlocal's own setting `name` from the environment (else `default`), as a number in
    [minimum, maximum]; UserInputError naming the variable when it is set to anything else.

    Read when used, never at import, so a bad value is one clear error where it matters
    instead of a traceback from every command.
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise UserInputError(f"environment variable {name} must be {kind} between {minimum} and "
                             f"{maximum}, got {shown(text)}") from None
    checker = bounded_int if whole else bounded_float
    return checker(f"environment variable {name}", value, minimum, maximum)
