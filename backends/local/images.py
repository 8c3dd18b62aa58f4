"""Environment images: a recipe from docker/ plus pip packages on a base, tagged by content hash.

The tag is a hash of everything that decides what the image contains: the recipe's files, the pip
packages (in order) and the base image's id. So an unchanged environment is found by one lookup
and never rebuilt, and a changed one (or a new base) gets a new tag. The host's pip settings are
transport, not content: they are handed to the build but not hashed.
"""

import ast
import configparser
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from amlocal.backends.local.run_settings import PROXY_VARIABLES
from amlocal.backends.recipes import recipe_dir
from amlocal.errors import AmlocalError, UserInputError

PUBLIC_BASE_IMAGE = "python:3.11-slim-bookworm"
DEBIAN_BASE_IMAGE = "amlocal/base:bookworm"
DEBIAN_BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
IMAGE_REPOSITORY_PREFIX = "amlocal/"
BUILD_CA_BUNDLE = "/tmp/amlocal-pip/ca-bundle.pem"
# A base with the host's pip settings as its global pip configuration, for Dockerfiles that do
# not take them from the build context themselves (see pip_configured_base).
PIP_BASE_REPOSITORY = "amlocal/pip-base"
PIP_BASE_FOLDER = "/etc/amlocal-pip"
_COPIES_PIP_SETTINGS = re.compile(r"^\s*(?:COPY|ADD)\s[^\n]*\bamlocal-pip\b", re.MULTILINE | re.IGNORECASE)
SYSTEM_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
# pip options worth carrying into a build; anything else in the host's pip config stays behind.
_CARRIED_PIP_OPTIONS = ("index-url", "extra-index-url", "trusted-host", "timeout", "retries",
                        "proxy", "default-timeout")
# The base a recipe's Dockerfile names for itself: `ARG BASE_IMAGE=<image>` (nvidia/cuda...).
_DEFAULT_BASE_ARG = re.compile(rb"^ARG\s+BASE_IMAGE=(\S+)\s*$", re.MULTILINE)


class ImageBuildError(AmlocalError):
    """The environment image could not be built."""


@dataclass(frozen=True)
class PreparedImage:
    tag: str
    base_image: str
    cached: bool


# -- recipes and hashing (pure; where the recipes are: backends/recipes.py) --------------------

def recipe_files(folder):
    """[(relative posix path, bytes)] of a recipe folder, in a stable order."""
    folder = Path(folder)
    return [(path.relative_to(folder).as_posix(), path.read_bytes())
            for path in sorted(folder.rglob("*")) if path.is_file()]


def environment_hash(files, pip_packages, base_image_id):
    """Hex digest of everything that goes into an environment image."""
    digest = hashlib.sha256()
    for name, content in files:
        digest.update(b"file\0" + name.encode() + b"\0" + hashlib.sha256(content).digest())
    for package in pip_packages:
        digest.update(b"pip\0" + package.encode() + b"\0")
    digest.update(b"base\0" + base_image_id.encode())
    return digest.hexdigest()


def image_tag(recipe, digest):
    return f"{IMAGE_REPOSITORY_PREFIX}{recipe}:{digest[:16]}"


def recipe_default_base(files):
    """The BASE_IMAGE default of the Dockerfile among a recipe's `files`, or None."""
    dockerfile = dict(files).get("Dockerfile", b"")
    match = _DEFAULT_BASE_ARG.search(dockerfile)
    return match.group(1).decode() if match else None


# -- the host's pip settings -----------------------------------------------------------------

@dataclass
class PipSettings:
    """pip options to use inside an image build, and what of the host's could not be used."""

    options: dict = field(default_factory=dict)
    cert_file: Path | None = None
    skipped: list = field(default_factory=list)


def read_host_pip_config():
    """`pip config list` of the Python running amlocal: pip itself resolves files and PIP_* vars."""
    try:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], check=True,
                                capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    config = {}
    for line in listed.splitlines():
        # Lines look like  global.index-url='https://...'  or  :env:.cert='/etc/...': the value
        # is a Python repr (a multi-line value arrives with its newlines escaped).
        key, separator, value = line.strip().partition("=")
        if not separator:
            continue
        try:
            config[key.rsplit(".", 1)[-1]] = str(ast.literal_eval(value))
        except (ValueError, SyntaxError):
            continue
    return config


def pip_settings_for_build(config, environ):
    """Choose which host pip settings an image build can use (pure: config and environ given).

    Index URLs that point at the local file system (file://, paths) cannot be reached from a
    build and are reported as skipped; find-links and constraint files likewise. The CA bundle is
    the one pip uses (cert), else the one requests/OpenSSL use, else the system bundle.
    """
    settings = PipSettings()
    for option in _CARRIED_PIP_OPTIONS:
        value = config.get(option)
        if not value:
            continue
        if option in ("index-url", "extra-index-url"):
            urls = value.split()
            reachable = [url for url in urls if url.startswith(("http://", "https://"))]
            settings.skipped += [f"{option}={url}" for url in urls if url not in reachable]
            if not reachable:
                continue
            value = " ".join(reachable)
        settings.options[option] = value
    for option in ("find-links", "constraint"):
        if config.get(option):
            settings.skipped.append(f"{option}={config[option]}")
    candidates = [config.get("cert"), environ.get("PIP_CERT"), environ.get("REQUESTS_CA_BUNDLE"),
                  environ.get("SSL_CERT_FILE"), *SYSTEM_CA_BUNDLES]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            settings.cert_file = Path(candidate)
            break
    return settings


def pip_conf_text(settings, cert_path=BUILD_CA_BUNDLE):
    parser = configparser.ConfigParser(interpolation=None)
    parser["global"] = dict(settings.options)
    if settings.cert_file:
        parser["global"]["cert"] = cert_path
    lines = []
    for section in parser.sections():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value}" for key, value in parser[section].items()]
    return "\n".join(lines) + "\n"


def write_pip_folder(destination, pip_settings, cert_path=BUILD_CA_BUNDLE):
    """amlocal-pip/ of a build context: pip.conf (its cert at `cert_path` in the image) and the
    CA bundle."""
    pip_folder = Path(destination) / "amlocal-pip"
    pip_folder.mkdir(exist_ok=True)
    (pip_folder / "pip.conf").write_text(pip_conf_text(pip_settings, cert_path))
    if pip_settings.cert_file:
        shutil.copyfile(pip_settings.cert_file, pip_folder / "ca-bundle.pem")
    return pip_folder


def write_build_context(destination, recipe_folder, pip_packages, pip_settings):
    """Assemble the build context: the recipe, requirements.txt and amlocal-pip/."""
    destination = Path(destination)
    shutil.copytree(recipe_folder, destination, dirs_exist_ok=True)
    (destination / "requirements.txt").write_text("".join(f"{p}\n" for p in pip_packages))
    write_pip_folder(destination, pip_settings)


def takes_pip_settings(dockerfile):
    """Whether a Dockerfile copies the host's pip settings from the build context itself (as
    amlocal's recipes do, `COPY amlocal-pip/ ...`)."""
    return _COPIES_PIP_SETTINGS.search(dockerfile) is not None


# -- the engine side ------------------------------------------------------------------------
# The functions below are handed a Docker client, so the Docker SDK is loaded by then; it is
# imported in them rather than with this module, which `amlocal base-image --help` and the
# recipe checks import without needing it.

def local_image(client, name):
    import docker.errors

    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


def resolve_base_image(client, requested=None, preferred=None):
    """The base image to build on, as (name, image id).

    An explicit request must exist or be pullable. Otherwise the first of `preferred` (the
    recipe's own default, e.g. nvidia/cuda), the public default and the Debian base that
    `amlocal base-image build` imports that is on this machine is used, else `preferred` (or the
    public default) is pulled. So a recipe whose libraries all come from PyPI builds on the local
    base where no registry answers.
    """
    if requested:
        candidates = [requested]
    else:
        candidates = list(dict.fromkeys(name for name in (preferred, PUBLIC_BASE_IMAGE,
                                                          DEBIAN_BASE_IMAGE) if name))
    for name in candidates:
        image = local_image(client, name)
        if image is not None:
            return name, image.id
    name = candidates[0]
    import docker.errors

    try:
        image = client.images.pull(name)
    except docker.errors.APIError as error:
        reason = (error.explanation or str(error)).splitlines()[0]
        hint = ("; where no registry is reachable, build a base from Debian packages with "
                "`amlocal base-image build`" if not requested else "")
        raise ImageBuildError(f"base image {name} is not on this machine and could not be pulled "
                              f"({reason}){hint}") from None
    return name, image.id


def ensure_image(client, recipe, pip_packages=(), base_image=None, on_line=lambda line: None,
                 should_cancel=lambda: False, dockerfile=None):
    """Find or build the environment image; return a PreparedImage.

    Build output goes line by line to `on_line`. `should_cancel` is asked between output chunks;
    when it says yes the build is abandoned (closing the stream stops the engine's build).
    """
    folder = recipe_dir(recipe)
    files = recipe_files(folder)
    preferred_base = recipe_default_base(files)
    if dockerfile is not None:  # Environment.from_dockerfile: the user's Dockerfile, not ours
        recipe = "custom"
        files = [(name, content) for name, content in files if name != "Dockerfile"]
        files.append(("Dockerfile", dockerfile.encode()))
    base_name, base_id = resolve_base_image(client, base_image, preferred_base)
    tag = image_tag(recipe, environment_hash(files, pip_packages, base_id))
    if local_image(client, tag) is not None:
        return PreparedImage(tag=tag, base_image=base_name, cached=True)

    settings = pip_settings_for_build(read_host_pip_config(), os.environ)
    on_line(f"Building image {tag} from recipe {recipe!r} on {base_name}")
    for skipped in settings.skipped:
        on_line(f"(not carried into the build: host pip setting {skipped}, which names a "
                "local path or file the build cannot reach)")
    build_base = base_name
    if dockerfile is not None and not takes_pip_settings(dockerfile):
        build_base = pip_configured_base(client, base_name, base_id, settings, on_line,
                                         should_cancel)
    with tempfile.TemporaryDirectory(prefix="amlocal-build-") as context:
        write_build_context(context, folder, pip_packages, settings)
        if dockerfile is not None:
            Path(context, "Dockerfile").write_text(dockerfile)
        built = _build(client, context, tag, build_base, on_line, should_cancel)
    on_line(f"Built image {tag}: {built.attrs['Size'] / 1e6:.0f} MB")
    return PreparedImage(tag=tag, base_image=base_name, cached=False)


def _build(client, context, tag, base_name, on_line, should_cancel):
    """Build the context folder as `tag` with BASE_IMAGE=`base_name` and the host's proxy
    variables, its output line by line to `on_line`; returns the built image."""
    build_args = {"BASE_IMAGE": base_name}
    build_args.update({name: os.environ[name] for name in PROXY_VARIABLES if os.environ.get(name)})
    stream = client.api.build(path=context, tag=tag, buildargs=build_args, rm=True,
                              forcerm=True, decode=True, network_mode="host", pull=False)
    try:
        for chunk in stream:
            if should_cancel():
                raise ImageBuildError("image build canceled")
            if "error" in chunk:
                raise ImageBuildError(f"image build failed: {chunk['error'].strip()}")
            text = chunk.get("stream") or chunk.get("status") or ""
            for line in text.splitlines():
                if line.strip():
                    on_line(line.rstrip())
    finally:
        stream.close()
    built = local_image(client, tag)
    if built is None:
        raise ImageBuildError(f"image build ended without producing {tag}")
    return built


_PIP_BASE_DOCKERFILE = f"""\
ARG BASE_IMAGE
FROM ${{BASE_IMAGE}}
COPY amlocal-pip/ {PIP_BASE_FOLDER}/
RUN cp {PIP_BASE_FOLDER}/pip.conf /etc/pip.conf
"""


def pip_configured_base(client, base_name, base_id, settings, on_line=lambda line: None,
                        should_cancel=lambda: False):
    """`base_name` with the host's pip settings (index URLs, CA bundle) as its global pip
    configuration (/etc/pip.conf, the CA in /etc/amlocal-pip/), built once and cached.

    For a Dockerfile that does not copy amlocal-pip/ itself (the self-contained one the Azure
    backend sends, a user's): pip in any of its stages then reaches the index as pip on this
    host does, and the Dockerfile's text is built unchanged. Its image keeps that configuration
    (it is built for this host, which has it).
    """
    with tempfile.TemporaryDirectory(prefix="amlocal-pip-base-") as context:
        pip_folder = write_pip_folder(context, settings, f"{PIP_BASE_FOLDER}/ca-bundle.pem")
        Path(context, "Dockerfile").write_text(_PIP_BASE_DOCKERFILE)
        digest = hashlib.sha256(f"{base_id}\0{_PIP_BASE_DOCKERFILE}".encode())
        for name, content in recipe_files(pip_folder):
            digest.update(name.encode() + b"\0" + content)
        tag = f"{PIP_BASE_REPOSITORY}:{digest.hexdigest()[:16]}"
        if local_image(client, tag) is None:
            _build(client, context, tag, base_name, lambda line: None, should_cancel)
    on_line(f"The Dockerfile takes no pip settings from the build context: it is built on {tag}, "
            f"{base_name} with this host's pip settings as its global pip configuration "
            "(/etc/pip.conf)")
    return tag


def build_debian_base(client, tag=DEBIAN_BASE_IMAGE, suite="bookworm", mirror=DEBIAN_MIRROR,
                      on_line=lambda line: None):
    """Build a base image from Debian packages with mmdebstrap and import it as `tag`.

    For machines that reach a Debian mirror but no container registry (air-gapped hosts, CI
    behind a proxy). Needs mmdebstrap, and root or unprivileged user namespaces.
    """
    if shutil.which("mmdebstrap") is None:
        raise UserInputError("mmdebstrap is not installed: `sudo apt-get install mmdebstrap` "
                             "(Debian/Ubuntu), then run this again")
    with tempfile.TemporaryDirectory(prefix="amlocal-base-") as workdir:
        tarball = Path(workdir) / "rootfs.tar"
        command = ["mmdebstrap", "--variant=minbase", f"--include={','.join(DEBIAN_BASE_PACKAGES)}",
                   suite, str(tarball), mirror]
        on_line("$ " + " ".join(command))
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        for line in process.stdout:
            on_line(line.rstrip())
        if process.wait() != 0:
            raise ImageBuildError(f"mmdebstrap failed with exit code {process.returncode}")
        repository, _, version = tag.rpartition(":")
        on_line(f"importing {tarball.stat().st_size / 2**20:.0f} MB root file system as {tag}")
        client.api.import_image(src=str(tarball), repository=repository, tag=version,
                                changes=["CMD [\"python3\"]"])
    image = client.images.get(tag)
    return image.id
