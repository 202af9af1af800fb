"""Who is who on the network: a federation's CA, per-party X.509 certificates, key files.

Every party (server, key holder, client ``i``) holds a certificate issued by the federation's
CA. The certificate binds the TLS key to the party's *protocol identity* through a URI in its
subjectAltName, ``fortis://<federation>/client/17`` (``/server``, ``/keyholder``), so a TLS
peer is a protocol id the moment its handshake completes: a client cannot speak as another
client without that client's private key.

A client's certificate also carries its Ed25519 *signing* public key (hardened mode's
PKI), in a private, non-critical extension (:data:`SIGNING_KEY_OID`). The TLS key and the
signing key are separate keys. Because the CA signs the extension, the server can forward
the population's certificates to every client and no server can substitute a signing key:
each client verifies every certificate against the CA itself.

Private keys are written with owner-only permissions (0600) through an atomic write, and
:func:`check_private_file` refuses to load one whose permissions are looser.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from fortis.files import atomic_write

from ..errors import KEYHOLDER_ID, SERVER_ID, ProtocolConfigError, party_name
from .errors import IdentityError, InsecureKeyFileError

__all__ = [
    "SIGNING_KEY_OID",
    "PartyFiles",
    "identity_uri",
    "parse_identity_uri",
    "make_ca",
    "issue_certificate",
    "certificate_identity",
    "certificate_signing_key",
    "verify_issued_by",
    "write_federation",
    "party_files",
    "check_private_file",
    "load_private_key",
    "load_certificate",
    "role_name",
]

#: Private OID (a UUID-derived ``2.25`` arc, no registration needed) of the extension that
#: carries a client's raw 32-byte Ed25519 signing public key.
SIGNING_KEY_OID = x509.ObjectIdentifier("2.25.116745453008746054775743876363195207613")

_FEDERATION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_URI_RE = re.compile(
    r"^fortis://([A-Za-z0-9][A-Za-z0-9._-]{0,63})/(server|keyholder|client/(\d{1,10}))$"
)
_DEFAULT_DAYS = 365


def role_name(party: int) -> str:
    """The file-name stem of a party: ``server``, ``keyholder`` or ``client-17``."""
    if party == SERVER_ID:
        return "server"
    if party == KEYHOLDER_ID:
        return "keyholder"
    return f"client-{party}"


def _check_federation(federation: str) -> str:
    if not isinstance(federation, str) or not _FEDERATION_RE.match(federation):
        raise ProtocolConfigError(
            f"federation name must be 1-64 characters of [A-Za-z0-9._-], got {federation!r}"
        )
    return federation


def _check_party(party: int) -> int:
    if isinstance(party, bool) or not isinstance(party, int):
        raise ProtocolConfigError(f"party id must be an int, got {party!r}")
    if party in (SERVER_ID, KEYHOLDER_ID) or 0 <= party < KEYHOLDER_ID:
        return party
    raise ProtocolConfigError(f"party id {party} is neither a client id nor server/keyholder")


def identity_uri(federation: str, party: int) -> str:
    """The subjectAltName URI that names ``party`` in ``federation``."""
    _check_federation(federation)
    party = _check_party(party)
    if party == SERVER_ID:
        tail = "server"
    elif party == KEYHOLDER_ID:
        tail = "keyholder"
    else:
        tail = f"client/{party}"
    return f"fortis://{federation}/{tail}"


def parse_identity_uri(uri: str) -> tuple[str, int]:
    """``(federation, party id)`` of an identity URI.

    Raises :class:`IdentityError` if ``uri`` is not one.
    """
    m = _URI_RE.match(uri) if isinstance(uri, str) else None
    if m is None:
        raise IdentityError(f"{uri!r} is not a fortis identity URI")
    federation, role, number = m.group(1), m.group(2), m.group(3)
    if role == "server":
        return federation, SERVER_ID
    if role == "keyholder":
        return federation, KEYHOLDER_ID
    party = int(number)
    if party >= KEYHOLDER_ID:
        raise IdentityError(f"{uri!r}: client id {party} is out of range")
    return federation, party


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def make_ca(
    federation: str, *, days: int = 10 * _DEFAULT_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A fresh CA key (ECDSA P-256) and self-signed CA certificate for ``federation``."""
    _check_federation(federation)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fortis CA {federation}")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _host_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    federation: str,
    party: int,
    *,
    hosts: Sequence[str] = (),
    signing_public: bytes | None = None,
    days: int = _DEFAULT_DAYS,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A TLS key (fresh P-256 unless ``key`` is given) and its certificate for ``party``,
    signed by the CA; ``hosts`` become DNS/IP subjectAltNames (for the server's address),
    ``signing_public`` (32 raw bytes) the signing-key extension."""
    _check_federation(federation)
    party = _check_party(party)
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = _now()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(identity_uri(federation, party)),
        *_host_names(hosts),
    ]
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, f"{role_name(party)}.{federation}"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if signing_public is not None:
        if not isinstance(signing_public, bytes) or len(signing_public) != 32:
            raise ProtocolConfigError("signing_public must be 32 raw Ed25519 public-key bytes")
        builder = builder.add_extension(
            x509.UnrecognizedExtension(SIGNING_KEY_OID, signing_public), critical=False
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def certificate_identity(cert: x509.Certificate, federation: str) -> int:
    """The protocol id ``cert`` names in ``federation``.

    Raises :class:`IdentityError` if it names none, several, or one of another federation.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise IdentityError("certificate has no subjectAltName (no fortis identity)") from None
    uris = [
        u
        for u in san.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith("fortis://")
    ]
    if len(uris) != 1:
        raise IdentityError(f"certificate names {len(uris)} fortis identities, expected 1")
    fed, party = parse_identity_uri(uris[0])
    if fed != federation:
        raise IdentityError(
            f"certificate is for federation {fed!r}, this is federation {federation!r}"
        )
    return party


def certificate_signing_key(cert: x509.Certificate) -> bytes | None:
    """The raw Ed25519 signing public key ``cert`` carries (``None``: none).

    Raises :class:`IdentityError` if the extension is malformed.
    """
    try:
        ext = cert.extensions.get_extension_for_oid(SIGNING_KEY_OID).value
    except x509.ExtensionNotFound:
        return None
    value = getattr(ext, "value", None)
    if not isinstance(value, bytes) or len(value) != 32:
        raise IdentityError("certificate's signing-key extension is not 32 raw bytes")
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(value)
    except ValueError:
        raise IdentityError("certificate's signing-key extension is not an Ed25519 key") from None
    return value


def verify_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> None:
    """Check that the CA signed ``cert`` and that it is valid now.

    Raises :class:`IdentityError` naming what failed.
    """
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise IdentityError(f"certificate was not issued by the federation's CA ({exc})") from None
    now = _now()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise IdentityError(
            f"certificate is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d})"
        )


# -- files ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartyFiles:
    """Where one party's credentials live: CA certificate, own certificate, TLS key and (clients)
    the Ed25519 signing key."""

    party: int
    ca: Path
    cert: Path
    key: Path
    signing_key: Path | None = None

    @property
    def name(self) -> str:
        return party_name(self.party)


def party_files(directory: str | os.PathLike, party: int) -> PartyFiles:
    """The credential paths of ``party`` in a directory written by :func:`write_federation`.

    Raises :class:`ProtocolConfigError` if a file is missing (named).
    """
    root = Path(directory)
    stem = role_name(_check_party(party))
    files = PartyFiles(
        party,
        root / "ca.pem",
        root / f"{stem}.pem",
        root / f"{stem}.key",
        (root / f"{stem}.sign.key") if party not in (SERVER_ID, KEYHOLDER_ID) else None,
    )
    for path in (files.ca, files.cert, files.key, files.signing_key):
        if path is not None and not path.is_file():
            raise ProtocolConfigError(
                f"{files.name}: credential file {path} is missing (make them with `fortis certs`)"
            )
    return files


def _private_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_federation(
    directory: str | os.PathLike,
    clients: int | Iterable[int],
    *,
    federation: str = "fortis",
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = _DEFAULT_DAYS,
    overwrite: bool = False,
) -> dict[int, PartyFiles]:
    """Make a CA and certificates for the server (``hosts`` in its subjectAltName), the key
    holder and every client (``clients``: a count, ids ``0..n-1``, or the ids), in
    ``directory``. Private keys are written 0600. Returns party id -> :class:`PartyFiles`.

    Raises :class:`ProtocolConfigError` if ``directory`` already holds a CA (unless
    ``overwrite``) or an argument is bad.
    """
    _check_federation(federation)
    ids = list(range(clients)) if isinstance(clients, int) else [int(i) for i in clients]
    if not ids:
        raise ProtocolConfigError("write_federation: no clients")
    for i in ids:
        if not 0 <= i < KEYHOLDER_ID:
            raise ProtocolConfigError(f"write_federation: client id {i} is out of range")
    if len(set(ids)) != len(ids):
        raise ProtocolConfigError("write_federation: client ids must be distinct")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    if (root / "ca.pem").exists() and not overwrite:
        raise ProtocolConfigError(
            f"{root} already holds a CA (ca.pem); pass overwrite=True (--force) to replace it"
        )
    ca_key, ca_cert = make_ca(federation, days=10 * days)
    atomic_write(root / "ca.key", _private_pem(ca_key), private=True)
    atomic_write(root / "ca.pem", _cert_pem(ca_cert))
    out: dict[int, PartyFiles] = {}
    for party in [SERVER_ID, KEYHOLDER_ID, *ids]:
        stem = role_name(party)
        signing = None
        if party not in (SERVER_ID, KEYHOLDER_ID):
            signing = ed25519.Ed25519PrivateKey.generate()
            atomic_write(root / f"{stem}.sign.key", _private_pem(signing), private=True)
        key, cert = issue_certificate(
            ca_key,
            ca_cert,
            federation,
            party,
            hosts=hosts if party == SERVER_ID else (),
            signing_public=(
                signing.public_key().public_bytes(
                    serialization.Encoding.Raw, serialization.PublicFormat.Raw
                )
                if signing is not None
                else None
            ),
            days=days,
        )
        atomic_write(root / f"{stem}.key", _private_pem(key), private=True)
        atomic_write(root / f"{stem}.pem", _cert_pem(cert))
        out[party] = party_files(root, party)
    return out


def check_private_file(path: str | os.PathLike) -> None:
    """Refuse a private-key file that anyone but its owner can read or write.

    Raises :class:`InsecureKeyFileError` naming the file and its mode (fix: ``chmod 600``),
    or :class:`ProtocolConfigError` if it does not exist.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ProtocolConfigError(f"private key file {p} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise InsecureKeyFileError(f"private key file {p} is not a regular file")
    if os.name == "posix" and st.st_mode & 0o077:
        raise InsecureKeyFileError(
            f"private key file {p} has mode {stat.S_IMODE(st.st_mode):04o}; it must be readable "
            f"by its owner only (chmod 600 {p})"
        )


def load_private_key(path: str | os.PathLike):
    """Load a PEM private key after :func:`check_private_file`."""
    check_private_file(path)
    data = Path(path).read_bytes()
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ProtocolConfigError(f"{path}: not a readable PEM private key ({exc})") from None


def load_certificate(path: str | os.PathLike) -> x509.Certificate:
    """Load a PEM certificate. Raises :class:`ProtocolConfigError` if it does not parse."""
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ProtocolConfigError(f"{path}: not a readable PEM certificate ({exc})") from None
