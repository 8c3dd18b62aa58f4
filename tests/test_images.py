"""Tests for the pure parts of backends/local/images.py: recipes, content hashes, pip settings and
the build context. Nothing here talks to a Docker engine."""

import re
import shutil

import pytest

from amlocal.backends.local import images
from amlocal.backends.local.images import (
    BUILD_CA_BUNDLE,
    PipSettings,
    environment_hash,
    image_tag,
    pip_conf_text,
    pip_settings_for_build,
    recipe_dir,
    recipe_files,
    write_build_context,
)
from amlocal.errors import UserInputError

from conftest import REPO

FILES = [("Dockerfile", b"FROM base\nRUN pip install x\n"), ("conf/settings.ini", b"[a]\nb = 1\n")]
PACKAGES = ("pandas==2.2.0", "scikit-learn")
BASE_ID = "sha256:" + "ab" * 32
BASE_HASH = environment_hash(FILES, PACKAGES, BASE_ID)


def with_byte_flipped(files, file_index, byte_index):
    name, content = files[file_index]
    flipped = content[:byte_index] + bytes([content[byte_index] ^ 1]) + content[byte_index + 1:]
    return [*files[:file_index], (name, flipped), *files[file_index + 1:]]


# -- environment_hash ------------------------------------------------------------------------

def test_environment_hash_is_a_stable_sha256_hex_digest():
    assert re.fullmatch(r"[0-9a-f]{64}", BASE_HASH)
    assert environment_hash(list(FILES), list(PACKAGES), BASE_ID) == BASE_HASH


@pytest.mark.parametrize("file_index, byte_index", [
    (file_index, byte_index)
    for file_index, (_, content) in enumerate(FILES)
    for byte_index in (0, len(content) // 2, len(content) - 1)
])
def test_environment_hash_changes_when_any_recipe_byte_changes(file_index, byte_index):
    changed = with_byte_flipped(FILES, file_index, byte_index)

    assert environment_hash(changed, PACKAGES, BASE_ID) != BASE_HASH


@pytest.mark.parametrize("files, packages, base_id", [
    pytest.param([FILES[0], ("conf/other.ini", FILES[1][1])], PACKAGES, BASE_ID, id="file renamed"),
    pytest.param(FILES + [("extra.txt", b"")], PACKAGES, BASE_ID, id="empty file added"),
    pytest.param(FILES[:1], PACKAGES, BASE_ID, id="file removed"),
    pytest.param(FILES, PACKAGES + ("numpy",), BASE_ID, id="package added"),
    pytest.param(FILES, PACKAGES[:1], BASE_ID, id="package removed"),
    pytest.param(FILES, ("pandas==2.2.1", "scikit-learn"), BASE_ID, id="package version changed"),
    pytest.param(FILES, tuple(reversed(PACKAGES)), BASE_ID, id="packages reordered"),
    pytest.param(FILES, ("pandas==2.2.0scikit-learn",), BASE_ID, id="packages joined"),
    pytest.param(FILES, PACKAGES, "sha256:" + "cd" * 32, id="base image id changed"),
])
def test_environment_hash_changes_with_what_goes_into_the_image(files, packages, base_id):
    assert environment_hash(files, packages, base_id) != BASE_HASH


def test_environment_hash_of_a_recipe_folder_follows_its_bytes(tmp_path):
    copy = tmp_path / "chainer"
    shutil.copytree(recipe_dir("chainer"), copy)
    (copy / "scripts").mkdir()
    (copy / "scripts" / "setup.sh").write_text("echo hi\n")
    original = environment_hash(recipe_files(copy), (), BASE_ID)

    assert environment_hash(recipe_files(copy), (), BASE_ID) == original
    with open(copy / "scripts" / "setup.sh", "ab") as handle:
        handle.write(b" ")
    assert environment_hash(recipe_files(copy), (), BASE_ID) != original


def test_recipe_files_lists_nested_files_in_a_stable_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_bytes(b"z")
    (tmp_path / "a.txt").write_bytes(b"a")
    (tmp_path / "Dockerfile").write_bytes(b"FROM x\n")

    assert recipe_files(tmp_path) == [
        ("Dockerfile", b"FROM x\n"), ("a.txt", b"a"), ("b/z.txt", b"z")]


def test_image_tag_is_repository_recipe_and_sixteen_hex_digits():
    assert image_tag("chainer", BASE_HASH) == f"amlocal/chainer:{BASE_HASH[:16]}"


# -- pip settings ----------------------------------------------------------------------------

@pytest.fixture
def no_system_ca(monkeypatch, tmp_path):
    """No system CA bundle, so that only the candidates a test creates can be chosen."""
    monkeypatch.setattr(images, "SYSTEM_CA_BUNDLES", (str(tmp_path / "no-system-bundle.pem"),))


def test_pip_settings_keep_http_index_urls_and_skip_local_ones(no_system_ca):
    config = {
        "index-url": "https://pypi.example.com/simple",
        "extra-index-url": "https://a.example/simple file:///srv/wheels /opt/index http://b.example/simple",
        "trusted-host": "b.example",
        "timeout": "60",
        "find-links": "/opt/wheels",
        "constraint": "/etc/pip/constraints.txt",
        "cache-dir": "/root/.cache/pip",  # not a transport setting: left behind silently
    }

    settings = pip_settings_for_build(config, environ={})

    assert settings == PipSettings(
        options={
            "index-url": "https://pypi.example.com/simple",
            "extra-index-url": "https://a.example/simple http://b.example/simple",
            "trusted-host": "b.example",
            "timeout": "60",
        },
        cert_file=None,
        skipped=[
            "extra-index-url=file:///srv/wheels",
            "extra-index-url=/opt/index",
            "find-links=/opt/wheels",
            "constraint=/etc/pip/constraints.txt",
        ],
    )


def test_an_index_url_with_no_reachable_url_is_dropped_not_emptied(no_system_ca):
    settings = pip_settings_for_build({"index-url": "file:///srv/simple"}, environ={})

    assert settings == PipSettings(options={}, cert_file=None, skipped=["index-url=file:///srv/simple"])


CA_CANDIDATES = ("pip-config-cert", "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "system")


@pytest.mark.parametrize("first_present", range(len(CA_CANDIDATES)))
def test_ca_bundle_is_chosen_in_the_documented_order(tmp_path, monkeypatch, first_present):
    """pip's cert, then PIP_CERT, REQUESTS_CA_BUNDLE, SSL_CERT_FILE, then the system bundle.

    The candidates before `first_present` name files that do not exist and are passed over.
    """
    paths = {name: tmp_path / f"{name}.pem" for name in CA_CANDIDATES}
    for name in CA_CANDIDATES[first_present:]:
        paths[name].write_text(f"-----BEGIN CERTIFICATE----- {name}\n")
    monkeypatch.setattr(images, "SYSTEM_CA_BUNDLES", (str(paths["system"]),))
    environ = {name: str(paths[name]) for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")}

    settings = pip_settings_for_build({"cert": str(paths["pip-config-cert"])}, environ)

    assert settings.cert_file == paths[CA_CANDIDATES[first_present]]


def test_no_ca_bundle_anywhere_means_none(no_system_ca):
    assert pip_settings_for_build({}, environ={}).cert_file is None


def test_a_multi_line_extra_index_url_from_pip_conf_is_carried(tmp_path, monkeypatch):
    pip_conf = tmp_path / "pip.conf"
    pip_conf.write_text("[global]\nextra-index-url =\n    https://a.example/simple\n"
                        "    https://b.example/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(pip_conf))
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)

    settings = pip_settings_for_build(images.read_host_pip_config(), environ={})

    assert settings.options.get("extra-index-url") == "https://a.example/simple https://b.example/simple"


def test_pip_conf_text_writes_the_options_and_points_cert_at_the_build_copy(tmp_path):
    settings = PipSettings(
        options={"index-url": "https://pypi.example.com/simple",
                 "proxy": "http://user:p%40ss@proxy:3128"},  # '%' must not be interpolated
        cert_file=tmp_path / "corp-ca.pem")

    assert pip_conf_text(settings) == (
        "[global]\n"
        "index-url = https://pypi.example.com/simple\n"
        "proxy = http://user:p%40ss@proxy:3128\n"
        f"cert = {BUILD_CA_BUNDLE}\n")


def test_pip_conf_text_without_settings_is_an_empty_global_section():
    assert pip_conf_text(PipSettings()) == "[global]\n"


# -- build context ---------------------------------------------------------------------------

def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_write_build_context_assembles_recipe_requirements_pip_conf_and_ca_bundle(tmp_path):
    recipe = recipe_dir("chainer")
    ca_bundle = tmp_path / "corp-ca.pem"
    ca_bundle.write_text("-----BEGIN CERTIFICATE----- corp\n")
    settings = PipSettings(options={"index-url": "https://pypi.example.com/simple"},
                           cert_file=ca_bundle)
    context = tmp_path / "context"

    write_build_context(context, recipe, ("pandas==2.2.0", "scikit-learn"), settings)

    assert files_under(context) == sorted(
        files_under(recipe) + ["amlocal-pip/ca-bundle.pem", "amlocal-pip/pip.conf", "requirements.txt"])
    assert (context / "Dockerfile").read_bytes() == (recipe / "Dockerfile").read_bytes()
    assert (context / "requirements.txt").read_text() == "pandas==2.2.0\nscikit-learn\n"
    assert (context / "amlocal-pip" / "pip.conf").read_text() == pip_conf_text(settings)
    assert (context / "amlocal-pip" / "ca-bundle.pem").read_bytes() == ca_bundle.read_bytes()


def test_write_build_context_without_packages_or_ca_bundle(tmp_path):
    context = tmp_path / "context"
    context.mkdir()  # a temporary folder that already exists, as ensure_image gives it

    write_build_context(context, recipe_dir("chainer"), (), PipSettings())

    assert (context / "requirements.txt").read_text() == ""
    assert (context / "amlocal-pip" / "pip.conf").read_text() == "[global]\n"
    assert not (context / "amlocal-pip" / "ca-bundle.pem").exists()


# -- recipes ---------------------------------------------------------------------------------

def test_the_chainer_recipe_is_found():
    folder = recipe_dir("chainer")

    assert folder.resolve() == (REPO / "docker" / "chainer").resolve()
    assert (folder / "Dockerfile").is_file()


@pytest.mark.parametrize("name", ["tensorflow", "../docker", ""])
def test_an_unknown_recipe_raises_listing_the_known_ones(name):
    with pytest.raises(UserInputError, match=rf"unknown environment recipe '{re.escape(name)}': "
                                             r"known: chainer, chainer-gpu, python$"):
        recipe_dir(name)
