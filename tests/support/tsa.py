"""A real RFC 3161 time-stamping authority for tests: ``openssl ts -reply`` behind
:class:`carevault.adapters.timestamping.TimeStampAuthority`.

The PKI (a root CA and a TSA certificate issued by it) is generated with ``cryptography``; the
time-stamp responses are produced by the ``openssl`` command line, so the client is tested
against an independent implementation rather than against itself.

Two details matter for ``rfc3161-client`` to accept OpenSSL's responses:

* the TSA certificate carries ``keyUsage=critical,digitalSignature,nonRepudiation`` and
  ``extendedKeyUsage=critical,timeStamping`` (RFC 3161 §2.3 requires the critical EKU);
* the ``[tsa]`` section has **no** ``certs =`` line: with extra certificates OpenSSL writes the
  SignedData certificate SET unsorted (not DER), and ``rfc3161-client`` rejects the response
  with ``InvalidSetOrdering``. With ``cert_req`` set, OpenSSL still embeds the signer's own
  certificate, which is all the verifier needs.

Outside CI a machine without ``openssl`` skips the tests that need it; under ``CI=true`` it fails
them (see :func:`openssl_binary`).
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from carevault.adapters.timestamping import TimestampError
from support.requirements import OPENSSL_TS, openssl_path, require

OPENSSL_TIMEOUT_SECONDS = 30.0
TSA_POLICY_OID = "1.3.6.1.4.1.55555.1.1"  # a private test policy: no meaning outside these tests


def openssl_binary() -> str:
    """The ``openssl`` command, with ``ts``; skip the test if absent (fail it under CI=true)."""
    require(OPENSSL_TS)
    path = openssl_path()
    assert path is not None
    return path


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CareVault Tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class TestCertificateAuthority:
    """A self-signed root CA that can issue time-stamping certificates."""

    __test__ = False  # not a pytest test class despite its name

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, common_name: str = "CareVault Test Root CA") -> TestCertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        name = _name(common_name)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key=key, certificate=certificate)

    @property
    def certificate_pem(self) -> bytes:
        return _pem(self.certificate)

    def issue_tsa(
        self, common_name: str
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A TSA key and certificate: critical keyUsage and critical EKU id-kp-timeStamping."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=True, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return key, certificate


class OpenSslTsa:
    """A time-stamping authority answering DER TimeStampReq with ``openssl ts -reply``.

    Implements ``TimeStampAuthority.stamp``. Everything (keys, certificate, serial file, config)
    lives under ``directory``; calls are serialised because ``openssl ts`` keeps its serial
    number in a file it rewrites on each reply. ``authority`` is the issuing root (a new one by
    default); ``digests`` lists the imprint algorithms accepted: any other gets a *rejection*
    response (``badAlg``), which is how tests obtain a real non-granted reply.
    """

    def __init__(
        self,
        directory: Path,
        *,
        common_name: str = "CareVault Test TSA",
        authority: TestCertificateAuthority | None = None,
        digests: str = "sha256, sha384, sha512",
        openssl: str | None = None,
    ) -> None:
        self.openssl = openssl or openssl_binary()
        self.directory = directory
        self.authority = authority or TestCertificateAuthority.create()
        key, certificate = self.authority.issue_tsa(common_name)
        self.certificate = certificate
        self.digests = digests
        self._lock = threading.Lock()

        directory.mkdir(parents=True, exist_ok=True)
        key_path = directory / "tsa.key"
        key_path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
        key_path.chmod(0o600)
        (directory / "tsa.pem").write_bytes(_pem(certificate))
        (directory / "serial").write_text("01\n", encoding="ascii")
        self.config_path = directory / "tsa.cnf"
        self.config_path.write_text(self._config(), encoding="utf-8")

    def _config(self) -> str:
        # No "certs =" line on purpose: see the module docstring (InvalidSetOrdering).
        return "\n".join([
            "[ tsa ]",
            "default_tsa = tsa_config",
            "",
            "[ tsa_config ]",
            f"dir = {self.directory}",
            "serial = $dir/serial",
            "crypto_device = builtin",
            "signer_cert = $dir/tsa.pem",
            "signer_key = $dir/tsa.key",
            "signer_digest = sha256",
            f"default_policy = {TSA_POLICY_OID}",
            f"digests = {self.digests}",
            "accuracy = secs:1",
            "clock_precision_digits = 0",
            "ordering = no",
            "tsa_name = yes",
            "ess_cert_id_chain = no",
            "ess_cert_id_alg = sha256",
            "",
        ])

    @property
    def certificate_pem(self) -> bytes:
        """The TSA's own certificate (what ``verify_timestamp`` pins)."""
        return _pem(self.certificate)

    @property
    def root_certificate_pem(self) -> bytes:
        return self.authority.certificate_pem

    def stamp(self, request_der: bytes) -> bytes:
        """Answer one DER TimeStampReq with a DER TimeStampResp."""
        with self._lock, tempfile.TemporaryDirectory(dir=self.directory) as work:
            query = Path(work) / "request.tsq"
            reply = Path(work) / "response.tsr"
            query.write_bytes(request_der)
            result = subprocess.run(
                [self.openssl, "ts", "-reply", "-config", str(self.config_path),
                 "-queryfile", str(query), "-out", str(reply)],
                capture_output=True, timeout=OPENSSL_TIMEOUT_SECONDS, check=False,
            )
            if result.returncode != 0 or not reply.is_file():
                stderr = result.stderr.decode("utf-8", "replace").strip()
                raise TimestampError(
                    f"openssl ts -reply failed (exit {result.returncode}): {stderr}"
                )
            return reply.read_bytes()
