"""What callers hand the model registry, checked before anything is copied: model names, ids and
versions (Azure ML's rules and words), the files of a local model, tags and properties, and the
tag and property filters of a listing.

Names follow Azure ML's rule (azureml-core's model_name_validation): letters, digits, '-', '_'
and '.', starting with a letter or digit, 1 to 255 characters.
"""

import json
import os
import posixpath
import re
from pathlib import Path

from amlocal.backends.history.run_files import RunFile
from amlocal.backends.history.run_folder import printable
from amlocal.errors import UserInputError
from amlocal.validation import check_text, shown

# azureml-core's model_name_validation, word for word.
_MODEL_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9\-\._]{0,254}$")
MODEL_NAME_RULE = ("Error, provided model name is invalid. It must only consist of letters, "
                   "numbers, dashes, periods, or underscores, start with a letter or number, and "
                   "be between 1 and 255 characters long.")


def is_valid_model_name(name):
    return isinstance(name, str) and _MODEL_NAME.fullmatch(name) is not None


def validate_model_name(name):
    if not is_valid_model_name(name):
        raise UserInputError(f"provided model name {name!r} is invalid. "
                             + MODEL_NAME_RULE.split(". ", 1)[1])


def parse_model_id(text, version_required=False):
    """'NAME' or 'NAME:VERSION' (a model's id) as (name, version or None)."""
    name, separator, version = str(text).partition(":")
    if not separator:
        if version_required:
            raise UserInputError(f"expected NAME:VERSION (a model's id, e.g. {text}:1), got "
                                 f"{text!r}")
        validate_model_name(name)
        return name, None
    validate_model_name(name)
    return name, parse_version(version)


def parse_version(version):
    """A model version: a positive integer (or its decimal text)."""
    if isinstance(version, bool):
        raise UserInputError(f"a model version is a positive integer, got {version!r}")
    if isinstance(version, str) and version.isdigit():
        version = int(version)
    if not isinstance(version, int) or version < 1:
        raise UserInputError(f"a model version is a positive integer, got {version!r}")
    return version


def collect_local_files(model_path, child_paths=None):
    """(host file, name in the model) pairs for a local file or folder, as azureml-core uploads it.

    Names keep the model's base name: 'model.pkl' for a file, 'folder/...' for a folder. With
    child_paths (a folder only), just those files and folders inside it. Links to folders are not
    followed (os.walk's rule, as azureml-core's); links to files are.
    """
    model_path = os.path.normpath(os.fspath(model_path))
    if not os.path.exists(model_path):
        raise UserInputError(f'provided model path "{model_path}" cannot be found')
    parent = os.path.dirname(os.path.abspath(model_path))
    if child_paths:
        files = set()
        for child in child_paths:
            full = os.path.abspath(os.path.join(model_path, os.path.normpath(child)))
            if not os.path.exists(full):
                raise UserInputError(f'provided child path "{child}" cannot be found')
            root = os.path.abspath(model_path)
            if os.path.commonpath([full, root]) != root:
                raise UserInputError(f'child path "{child}" is outside the model folder '
                                     f'{model_path}')
            files.update(_walk(full) if os.path.isdir(full) else [full])
    elif os.path.isdir(model_path):
        files = _walk(os.path.abspath(model_path))
    else:
        files = [os.path.abspath(model_path)]
    pairs = [(Path(path), Path(os.path.relpath(path, parent)).as_posix()) for path in sorted(files)]
    if not pairs:
        raise UserInputError(f"the model folder {model_path} holds no files to register")
    return pairs


def _walk(folder):
    return [os.path.join(dirpath, filename)
            for dirpath, _dirnames, filenames in os.walk(folder) for filename in filenames]


def model_entries(source_paths):
    """[(host path, posix name in the model)] from a local path or from pairs; checked."""
    if isinstance(source_paths, (str, os.PathLike)):
        pairs = collect_local_files(source_paths)
    else:
        pairs = [(source if isinstance(source, RunFile) else Path(source), str(relative))
                 for source, relative in source_paths]
    if not pairs:
        raise UserInputError("no files to register")
    seen = {}
    for source, relative in pairs:
        normalized = posixpath.normpath(relative)
        if (posixpath.isabs(normalized) or normalized.split("/", 1)[0] in ("", ".", "..")
                or "\\" in normalized or normalized != relative):
            raise UserInputError(f"not a name inside a model: {relative!r}")
        if printable(relative) != relative:
            raise UserInputError(f"not a name inside a model: {printable(relative)!r} (the "
                                 "registry keeps UTF-8 names without control characters)")
        seen.setdefault(normalized, source)
    tops = {relative.split("/", 1)[0] for relative in seen}
    if len(tops) != 1:
        raise UserInputError(f"a model is one file or one folder, got {sorted(tops)}")
    return [(source, relative) for relative, source in sorted(seen.items())]


def json_object(value, what):
    """A dict of JSON values (None: {}), copied; UserInputError otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserInputError(f"{what.capitalize()} must be a dict")
    try:
        copied = json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise UserInputError(f"Error with JSON serialization for {what}, be sure they are "
                             "properly formatted.") from None
    singular = {"tags": "tag", "properties": "property"}.get(what, what)
    for key, item in copied.items():
        check_text(key, f"{singular} key {shown(key)}")
        if isinstance(item, str):
            check_text(item, f"the value of {singular} {shown(key)}")
    return copied


def parse_filter(entries, what):
    """azureml-core's tag/property filter: a list of 'key' or [key, value]; as (key, value|None)."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise UserInputError(f'Expected {what} must be list type. Ex. ["key", ["key2", "key2 '
                             f'value"]]: provided {type(entries)}')
    parsed = []
    for entry in entries:
        if isinstance(entry, str):
            parsed.append((entry, None))
        elif isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str):
            parsed.append((entry[0], str(entry[1])))
        else:
            raise UserInputError(f"each {what} filter is 'key' or ['key', 'value'], got {entry!r}")
    return parsed


def matches_filter(values, wanted):
    for key, value in wanted:
        if key not in values:
            return False
        if value is not None and _text(values[key]) != value:
            return False
    return True


def _text(value):
    return value if isinstance(value, str) else json.dumps(value)
