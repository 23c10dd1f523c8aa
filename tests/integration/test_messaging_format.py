"""Secure messaging, step 1: encryption certificates from the platform CA, the messaging
directory, and the S/MIME format, read by OpenSSL as any mail software would.

The world (a PKI, four professionals with a card and a messaging key) is built once per module
on SQLite; the store's query is also run on PostgreSQL (`test_the_directory_lookup_on_both`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import Engine

from carevault.adapters.keys.local_file import create_key_file
from carevault.adapters.messaging import smime
from carevault.adapters.storage.database import connect, upgrade
from carevault.client import messaging as client
from carevault.domain.errors import InvalidInput, NotFound
from carevault.domain.messaging import address_of, identifier_of
from carevault.services import messaging, pki
from carevault.settings import Settings
from support.messaging import World, build_world, now

MARKER = "MARKER-7f3a-body-never-on-the-server"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("messaging")
    key_file = folder / "keys" / "carevault.key"
    create_key_file(key_file)
    url = f"sqlite:///{folder / 'carevault.db'}"
    engine = connect(url)
    upgrade(engine)
    settings = Settings(database_url=url, key_source=f"file:{key_file}",
                        _env_file=None)  # type: ignore[call-arg]
    yield build_world(settings, engine, folder / "people")
    engine.dispose()


def openssl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=False)


# --- certificates and addresses ---------------------------------------------------------------


def test_addresses_follow_the_directory_identifier() -> None:
    assert address_of("HP-123456", "msg.example") == "hp-123456@msg.example"
    assert identifier_of("<HP-123456@MSG.example>", "msg.example") == "hp-123456"
    for wrong in ("hp-1@elsewhere.example", "no-at-sign", "@msg.example", "a b@msg.example"):
        with pytest.raises(InvalidInput):
            identifier_of(wrong, "msg.example")
    with pytest.raises(InvalidInput):
        address_of("HP 1/2", "msg.example")


def test_an_encryption_certificate_encrypts_and_does_nothing_else(world: World) -> None:
    anne = world.people["anne"]
    certificate = anne.encryption_certificate
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_encipherment
    assert not usage.value.digital_signature and not usage.value.key_agreement
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == [anne.address]
    assert isinstance(certificate.public_key(), rsa.RSAPublicKey)
    # The subject comes from the directory, not from the CSR (which said "anne").
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Dr Anne"
    # It is no card: the token endpoint's chain check refuses it.
    with world.units() as uow, pytest.raises(pki.CertificateRejected):
        pki.validate_client_chain(uow, [certificate.public_bytes(Encoding.DER)], now())
    # The card's certificate is no encryption certificate: a message cannot be sent to it.
    with pytest.raises(ValueError, match="RSA"):
        smime.envelope(b"x", [anne.card_certificate])


def test_enrolment_refuses_what_it_must(world: World, tmp_path: Path) -> None:
    paul = world.people["paul"]
    weak = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")])
    weak_csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(
        weak, hashes.SHA256())
    cases = {
        b"not a csr": "not a PEM",
        weak_csr.public_bytes(Encoding.PEM): "at least 3072",
        b"-" * 20_000: "at most 16 KiB",
    }
    for csr, reason in cases.items():
        with world.units() as uow, pytest.raises(InvalidInput, match=reason):
            messaging.issue_encryption_certificate(uow, world.ctx, paul.practitioner_id, csr)
    _, good = client.keygen("x")
    with world.units() as uow, pytest.raises(NotFound):
        messaging.issue_encryption_certificate(uow, world.ctx, "no-such-practitioner", good)


def test_the_directory_names_where_to_encrypt(world: World) -> None:
    lea = world.people["lea"]
    with world.units() as uow:
        found = messaging.recipient(uow, world.ctx, lea.address.upper())
    assert found.address == lea.address
    assert [r.serial for r in found.certificates] == [lea.encryption_serial]
    with world.units() as uow, pytest.raises(NotFound):
        messaging.recipient(uow, world.ctx, f"hp-999@{world.ctx.domain}")


# --- the format -------------------------------------------------------------------------------


def test_two_colleagues_read_it_with_openssl_and_nobody_else(world: World,
                                                             tmp_path: Path) -> None:
    sent = world.compose("anne", ["paul", "lea"], f"Bonjour, {MARKER}.")
    message = tmp_path / "message.eml"
    message.write_bytes(sent)
    assert MARKER.encode() not in sent
    for name in ("paul", "lea", "anne"):  # both colleagues, and the sender's own copy
        person = world.people[name]
        decrypted = openssl("cms", "-decrypt", "-in", str(message),
                            "-recip", str(person.folder / "enc.pem"),
                            "-inkey", str(person.folder / "enc.key"))
        assert decrypted.returncode == 0, decrypted.stderr
        verified = openssl("cms", "-verify", "-CAfile", str(person.folder.parent / "chain.pem"),
                           "-purpose", "any", data=decrypted.stdout)
        assert verified.returncode == 0, verified.stderr
        assert MARKER.encode() in verified.stdout
        opened = client.read(sent, person.encryption_certificate, person.encryption_key,
                             world.trust())
        assert MARKER in opened.body and opened.warnings == ()
        assert opened.sender == world.people["anne"].address
    marc = world.people["marc"]
    refused = openssl("cms", "-decrypt", "-in", str(message),
                      "-recip", str(marc.folder / "enc.pem"),
                      "-inkey", str(marc.folder / "enc.key"))
    assert refused.returncode != 0 and MARKER.encode() not in refused.stdout
    with pytest.raises(client.NotForYou):
        client.read(sent, marc.encryption_certificate, marc.encryption_key, world.trust())
    # The envelope says to whom, by issuer and serial, and how.
    info = smime.inspect_envelope(smime.pkcs7_payload(sent, smime.AUTH_ENVELOPED))
    assert {format(r.serial, "x") for r in info.recipients} == {
        world.people[n].encryption_serial for n in ("anne", "paul", "lea")}
    assert info.content_encryption == "aes256_gcm"
    assert set(info.key_transport) == {"rsaes_oaep"}


def test_attachments_travel_inside(world: World) -> None:
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 40
    sent = world.compose("anne", ["paul"], "ci-joint", attachments=[
        client.Attachment("compte-rendu.pdf", "application/pdf", pdf)],
        receipt_requested=True)
    assert b"compte-rendu" not in sent
    paul = world.people["paul"]
    opened = client.read(sent, paul.encryption_certificate, paul.encryption_key, world.trust())
    assert opened.attachments == (client.Attachment("compte-rendu.pdf", "application/pdf", pdf),)
    assert opened.receipt_requested and opened.subject == "Avis"


def test_a_tampered_message_fails(world: World) -> None:
    paul = world.people["paul"]
    sent = world.compose("anne", ["paul"], MARKER)
    der = smime.pkcs7_payload(sent, smime.AUTH_ENVELOPED)
    # 1. a bit flipped in the ciphertext: the GCM tag fails.
    position = der.index(der[-40:]) + 5
    flipped = der[:position] + bytes([der[position] ^ 1]) + der[position + 1:]
    with pytest.raises(smime.SignatureInvalid):
        smime.open_envelope(flipped, paul.encryption_certificate, paul.encryption_key)
    # 2. someone who can encrypt to Paul (anyone: the certificate is public) re-wraps a signed
    # part whose content was changed: the signature fails.
    inner = smime.open_envelope(der, paul.encryption_certificate, paul.encryption_key)
    signed = smime.pkcs7_payload(inner, smime.SIGNED)
    changed = signed.replace(b"Avis", b"AVIS")
    assert changed != signed
    forged = smime.pkcs7_part(smime.envelope(smime.pkcs7_part(changed, smime.SIGNED).as_bytes(),
                                             [paul.encryption_certificate]),
                              smime.AUTH_ENVELOPED).as_bytes()
    with pytest.raises(client.SignatureInvalid):
        client.read(forged, paul.encryption_certificate, paul.encryption_key, world.trust())


def test_a_signer_the_platform_does_not_vouch_for_is_flagged(world: World) -> None:
    """Signed by a card of another CA, or by a colleague posing as the sender."""
    from support.x509_ca import LocalCa
    paul = world.people["paul"]
    trust = world.trust()
    sent = world.compose("anne", ["paul"], "x")
    other = client.Trust(LocalCa(paul.folder / "other-ca").certificate, trust.crl)
    opened = client.read(sent, paul.encryption_certificate, paul.encryption_key, other)
    assert "signer-untrusted" in opened.warnings
    lea, anne = world.people["lea"], world.people["anne"]
    posing = client.compose(sender=anne.address, signer_certificate=lea.card_certificate,
                            signer_key=lea.card_key,
                            recipients=[(paul.address, paul.encryption_certificate)],
                            subject="x", body="x", now=now())
    opened = client.read(posing, paul.encryption_certificate, paul.encryption_key, trust)
    assert opened.warnings == ("sender-mismatch",)


def test_a_message_from_a_revoked_sender_is_flagged(world: World) -> None:
    marc, paul = world.people["marc"], world.people["paul"]
    sent = world.compose("marc", ["paul"], "avant la révocation")
    with world.units() as uow:
        pki.revoke(uow, marc.card_serial, "keyCompromise", now())
    opened = client.read(sent, paul.encryption_certificate, paul.encryption_key, world.trust())
    assert opened.warnings == ("signer-revoked",)


def test_a_revoked_encryption_certificate_leaves_the_directory(world: World) -> None:
    marc = world.people["marc"]
    with world.units() as uow:
        pki.revoke(uow, marc.encryption_serial, "superseded", now())
    with world.units() as uow, pytest.raises(NotFound):
        messaging.recipient(uow, world.ctx, marc.address)


# --- on both databases ------------------------------------------------------------------------


def test_the_directory_lookup_on_both(settings: Settings, engine: Engine,
                                      tmp_path: Path) -> None:
    small = build_world(settings, engine, tmp_path, names=("anne", "paul", "lea"))
    lea = small.people["lea"]
    with small.units() as uow:
        assert [r.serial for r in uow.pki.encryption_certificates("HP-100002", now())] == [
            lea.encryption_serial]
        assert uow.pki.encryption_certificates("hp-100002", now())[0].kind == "encryption"
    with small.units() as uow:
        pki.revoke(uow, lea.encryption_serial, "superseded", now())
    with small.units() as uow:
        assert uow.pki.encryption_certificates("hp-100002", now()) == []


def test_a_signed_read_receipt_goes_back_to_the_sender(world: World, tmp_path: Path) -> None:
    anne, paul = world.people["anne"], world.people["paul"]
    asked = world.compose("anne", ["paul"], f"Lisez ceci {MARKER}", receipt_requested=True)
    opened = client.read(asked, paul.encryption_certificate, paul.encryption_key,
                         world.trust())
    assert opened.receipt_requested and opened.receipt_for is None
    sent = client.receipt(opened, reader=paul.address,
                          signer_certificate=paul.card_certificate, signer_key=paul.card_key,
                          sender_certificate=anne.encryption_certificate,
                          own_certificate=paul.encryption_certificate, now=now())
    assert MARKER.encode() not in sent
    back = client.read(sent, anne.encryption_certificate, anne.encryption_key, world.trust())
    assert back.receipt_for == opened.message_id and back.sender == paul.address
    assert back.warnings == () and MARKER not in back.body
    # Standard MDN inside, which OpenSSL opens as it opens any message.
    (tmp_path / "mdn.eml").write_bytes(sent)
    decrypted = openssl("cms", "-decrypt", "-in", str(tmp_path / "mdn.eml"),
                        "-recip", str(anne.folder / "enc.pem"),
                        "-inkey", str(anne.folder / "enc.key"))
    verified = openssl("cms", "-verify", "-CAfile", str(anne.folder.parent / "chain.pem"),
                       "-purpose", "any", data=decrypted.stdout)
    assert verified.returncode == 0, verified.stderr
    assert b"message/disposition-notification" in verified.stdout
    assert b"Disposition: manual-action/MDN-sent-manually; displayed" in verified.stdout
    # Only a message that asked for one gets a receipt.
    plain = client.read(world.compose("anne", ["paul"], "x"), paul.encryption_certificate,
                        paul.encryption_key, world.trust())
    with pytest.raises(ValueError, match="no read receipt"):
        client.receipt(plain, reader=paul.address, signer_certificate=paul.card_certificate,
                       signer_key=paul.card_key, sender_certificate=anne.encryption_certificate,
                       now=now())
