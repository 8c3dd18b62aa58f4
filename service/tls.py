"""The emulator's TLS: a CA and a server certificate per run history, for its blob host.

azureml-core uploads every blob over https to `https://{account}.blob.{suffix}` (it rebuilds the
URL from the SAS URI's host), so the emulator terminates TLS itself for its blob host (config.py's
BLOB_HOST) behind a CONNECT proxy (proxy.py). The client trusts the emulator's CA through
REQUESTS_CA_BUNDLE, a bundle of certifi's CAs (or the user's own bundle) plus this one, so the
user's other https traffic keeps verifying as before.

The CA is name-constrained to the emulator's own domain and its private key is never kept: it
signs the server certificate once, in memory, and is gone, so nothing on disk can mint a
certificate that a client trusting the bundle would accept for any other host. The server's
key is kept under $AMLOCAL_HOME/emulator/tls/ with mode 0600.
"""

import datetime
import hashlib
import os
import secrets
import shutil
import ssl
from dataclasses import dataclass
from pathlib import Path

from amlocal.service.config import BLOB_DOMAIN, BLOB_HOST, emulator_dir

TLS_FOLDER = "tls"
CA_NAME = "ca.pem"
CERTIFICATE_NAME = "server.pem"
KEY_NAME = "server-key.pem"
VALID_DAYS = 3650


@dataclass(frozen=True)
class TlsFiles:
    folder: Path

    @property
    def ca(self):
        return self.folder / CA_NAME

    @property
    def certificate(self):
        return self.folder / CERTIFICATE_NAME

    @property
    def key(self):
        return self.folder / KEY_NAME


def tls_files(home):
    """The emulator's CA and server certificate for `home`, made on first use (by whichever
    process comes first: they are made in a folder of their own and renamed into place whole)."""
    files = TlsFiles(emulator_dir(home) / TLS_FOLDER)
    if not files.certificate.exists():
        files.folder.parent.mkdir(parents=True, exist_ok=True)
        staging = files.folder.with_name(f".{TLS_FOLDER}.{secrets.token_hex(8)}")
        staging.mkdir(mode=0o700)
        try:
            _write_certificates(TlsFiles(staging))
            os.rename(staging, files.folder)
        except OSError:
            if not files.certificate.exists():  # not another process's win: a real failure
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return files


def server_context(home):
    """The ssl.SSLContext the emulator's blob host serves with."""
    files = tls_files(home)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.certificate, files.key)
    return context


def ca_bundle(home, base=None):
    """A CA bundle file of `base` (a bundle file; default certifi's) plus the emulator's CA, for
    REQUESTS_CA_BUNDLE. Written once per base bundle content, under a name of its digest."""
    import certifi

    base_bytes = Path(base or certifi.where()).read_bytes()
    files = tls_files(home)
    ca = files.ca.read_bytes()
    if ca in base_bytes:
        return Path(base or certifi.where())
    path = files.folder / f"bundle-{hashlib.sha256(base_bytes + ca).hexdigest()[:16]}.pem"
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        temporary.write_bytes(base_bytes.rstrip(b"\n") + b"\n" + ca)
        os.replace(temporary, path)
    return path


def _write_certificates(files):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = now - datetime.timedelta(days=1), now + datetime.timedelta(days=VALID_DAYS)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            f"amlocal emulator CA {secrets.token_hex(4)}")])
    ca_key_id = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(not_before).not_valid_after(not_after)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          # Only the emulator's own domain: this CA can vouch for no real host.
          .add_extension(x509.NameConstraints(permitted_subtrees=[x509.DNSName(BLOB_DOMAIN)],
                                              excluded_subtrees=None), critical=True)
          .add_extension(ca_key_id, critical=False)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BLOB_HOST)]))
              .issuer_name(ca_name).public_key(server_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(not_before).not_valid_after(not_after)
              .add_extension(x509.SubjectAlternativeName([x509.DNSName(BLOB_HOST)]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                           key_encipherment=False, data_encipherment=False,
                                           key_agreement=True, key_cert_sign=False, crl_sign=False,
                                           encipher_only=False, decipher_only=False), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                             critical=False)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()),
                             critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    key_bytes = server_key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    # Written last: its presence says the folder is whole.
    files.certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))
