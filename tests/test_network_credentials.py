"""Certificates bind TLS keys and signing keys to protocol ids; key files are owner-only."""

from __future__ import annotations

import os

import pytest
from cryptography import x509

from protocol import KEYHOLDER_ID, SERVER_ID
from protocol.errors import ProtocolConfigError
from protocol.network import InsecureKeyFileError, party_files, write_federation
from protocol.network.credentials import (
    certificate_identity,
    certificate_signing_key,
    check_private_file,
    identity_uri,
    issue_certificate,
    load_certificate,
    load_private_key,
    make_ca,
    parse_identity_uri,
    verify_issued_by,
)
from protocol.network.errors import IdentityError
from protocol.network.transport import tls_context


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("certs")
    return root, write_federation(root, [0, 1, 7], federation="alpha")


@pytest.mark.parametrize("party", [0, 17, KEYHOLDER_ID - 1, SERVER_ID, KEYHOLDER_ID])
def test_identity_uris_round_trip(party):
    assert parse_identity_uri(identity_uri("alpha", party)) == ("alpha", party)


@pytest.mark.parametrize(
    "uri",
    [
        "fortis://alpha/client/-1",
        "fortis://alpha/client/4294967294",
        "fortis://alpha/client/1/extra",
        "https://alpha/client/1",
        "fortis://al pha/server",
        "fortis://alpha/Server",
    ],
)
def test_malformed_identity_uris_are_refused(uri):
    with pytest.raises(IdentityError):
        parse_identity_uri(uri)


def test_each_certificate_names_its_party_and_carries_the_clients_signing_key(fed):
    root, files = fed
    ca = load_certificate(root / "ca.pem")
    for party, f in files.items():
        cert = load_certificate(f.cert)
        verify_issued_by(cert, ca)
        assert certificate_identity(cert, "alpha") == party
        key = certificate_signing_key(cert)
        if party in (SERVER_ID, KEYHOLDER_ID):
            assert key is None and f.signing_key is None
        else:
            signing = load_private_key(f.signing_key)
            assert key == signing.public_key().public_bytes_raw()


def test_a_certificate_of_another_federation_or_ca_is_refused(fed):
    root, files = fed
    cert = load_certificate(files[0].cert)
    with pytest.raises(IdentityError, match="federation 'alpha'"):
        certificate_identity(cert, "beta")
    other_key, other_ca = make_ca("alpha")
    with pytest.raises(IdentityError, match="not issued by the federation's CA"):
        verify_issued_by(cert, other_ca)
    _, forged = issue_certificate(other_key, other_ca, "alpha", 0)
    with pytest.raises(IdentityError):
        verify_issued_by(forged, load_certificate(root / "ca.pem"))


def test_a_certificate_with_two_identities_is_refused(fed):
    root, _ = fed
    ca_key, ca = make_ca("alpha")
    _, cert = issue_certificate(ca_key, ca, "alpha", 3)
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(ca.subject)
        .public_key(cert.public_key())
        .serial_number(1)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(identity_uri("alpha", 3)),
                    x509.UniformResourceIdentifier(identity_uri("alpha", 4)),
                ]
            ),
            critical=False,
        )
    )
    from cryptography.hazmat.primitives import hashes

    two = builder.sign(ca_key, hashes.SHA256())
    with pytest.raises(IdentityError, match="2 fortis identities"):
        certificate_identity(two, "alpha")


def test_private_keys_are_written_owner_only_and_looser_files_are_refused(fed, tmp_path):
    root, files = fed
    for f in files.values():
        for path in (f.key, f.signing_key):
            if path is not None:
                assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(root / "ca.key").st_mode & 0o777 == 0o600
    loose = tmp_path / "loose.key"
    loose.write_bytes((files[0].key).read_bytes())
    os.chmod(loose, 0o644)
    with pytest.raises(InsecureKeyFileError, match="chmod 600"):
        check_private_file(loose)
    with pytest.raises(InsecureKeyFileError):
        load_private_key(loose)


def test_tls_refuses_to_start_with_a_group_readable_key(fed, tmp_path):
    root, files = fed
    f = files[1]
    os.chmod(f.key, 0o640)
    try:
        with pytest.raises(InsecureKeyFileError):
            tls_context(f, server_side=False)
    finally:
        os.chmod(f.key, 0o600)


def test_writing_a_federation_twice_needs_overwrite(fed):
    root, _ = fed
    with pytest.raises(ProtocolConfigError, match="already holds a CA"):
        write_federation(root, 2, federation="alpha")


def test_missing_credentials_are_named(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    with pytest.raises(ProtocolConfigError, match="client-3.pem is missing"):
        party_files(tmp_path, 3)


def test_the_key_holder_refuses_a_paillier_key_file_others_can_read(tmp_path):
    from protocol.network import load_paillier_key, save_paillier_key
    from tests.protocol_helpers import paillier_test_key

    path = tmp_path / "keyholder.paillier"
    save_paillier_key(path, paillier_test_key())
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_paillier_key(path, allow_insecure=True).public_key.n == (
        paillier_test_key().public_key.n
    )
    os.chmod(path, 0o604)
    with pytest.raises(InsecureKeyFileError, match="0604"):
        load_paillier_key(path, allow_insecure=True)
