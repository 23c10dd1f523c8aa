"""A private rsyslog that plays the ATNA Audit Record Repository in tests (RFC 5425 and RELP).

``RsyslogServer`` generates a throwaway PKI with the ``cryptography`` package (a CA, a server
certificate for ``localhost``/127.0.0.1, a permitted client certificate, a client certificate
the server does not permit, and a second CA that trusts nothing of ours), writes an rsyslog
configuration that loads only ``imtcp`` with the ``gtls`` stream driver on 127.0.0.1 (mutual
TLS, ``x509/name`` with ``PermittedPeer``) and writes every received message with ``omfile``, one
raw message per line, into one file per APP-NAME. Nothing opens a system socket. With
``relp=True`` it also loads ``imrelp`` (package ``rsyslog-relp``; librelp with GnuTLS) on a second
port, ``relp_port``: TLS with the same certificates, ``tls.authMode="name"`` with the same
permitted peer, into the same files.

``start()`` runs ``rsyslogd -n -f <conf> -i <pidfile>`` and waits until the ports listen;
``stop()`` sends SIGTERM and waits for the exit; ``start()`` again reuses the same ports and
certificates, and the files received so far stay. ``received_lines()`` reads what rsyslog
wrote. A machine without ``rsyslogd`` or its TLS driver (packages ``rsyslog``,
``rsyslog-gnutls``), or for ``relp=True`` without ``imrelp`` (``rsyslog-relp``), skips the
test, except under ``CI=true`` where that is a failure (`support.requirements`).

The main queue is ``Direct``: the input thread itself runs the file action, so a message read
from a connection is written to the file before the next data from that connection is read.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from carevault.adapters.syslog.relp_sender import RelpSender
from carevault.adapters.syslog.tls_sender import TlsSyslogSender
from support.requirements import RSYSLOG, RSYSLOG_GNUTLS, RSYSLOG_RELP, find_rsyslogd, require

START_SECONDS = 20.0
STOP_SECONDS = 20.0
PERMITTED_CLIENT = "carevault-exporter"
UNPERMITTED_CLIENT = "intruder"
SERVER_NAME = "localhost"


def require_rsyslogd() -> str:
    """The rsyslogd binary, with its TLS driver; skips the test when either is missing, fails
    it under ``CI=true`` (`support.requirements`)."""
    require(RSYSLOG, RSYSLOG_GNUTLS)
    binary = find_rsyslogd()
    assert binary is not None
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- throwaway PKI -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files of a throwaway PKI."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    unpermitted_cert: Path
    unpermitted_key: Path
    foreign_ca_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CareVault tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _new_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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


def _new_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    names: Iterable[x509.GeneralName],
    usage: x509.ObjectIdentifier,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def make_pki(directory: Path) -> Pki:
    """Generate a CA, a server certificate, two client certificates and a foreign CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _new_ca("CareVault test CA")
    _foreign_key, foreign_cert = _new_ca("Some other CA")
    server_key, server_cert = _new_leaf(
        ca_key,
        ca_cert,
        SERVER_NAME,
        [x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        ExtendedKeyUsageOID.SERVER_AUTH,
    )
    client_key, client_cert = _new_leaf(
        ca_key,
        ca_cert,
        PERMITTED_CLIENT,
        [x509.DNSName(PERMITTED_CLIENT)],
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    other_key, other_cert = _new_leaf(
        ca_key,
        ca_cert,
        UNPERMITTED_CLIENT,
        [x509.DNSName(UNPERMITTED_CLIENT)],
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    pki = Pki(
        ca_file=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        unpermitted_cert=directory / "intruder.pem",
        unpermitted_key=directory / "intruder.key",
        foreign_ca_file=directory / "foreign-ca.pem",
    )
    _write_cert(ca_cert, pki.ca_file)
    _write_cert(foreign_cert, pki.foreign_ca_file)
    _write_cert(server_cert, pki.server_cert)
    _write_key(server_key, pki.server_key)
    _write_cert(client_cert, pki.client_cert)
    _write_key(client_key, pki.client_key)
    _write_cert(other_cert, pki.unpermitted_cert)
    _write_key(other_key, pki.unpermitted_key)
    return pki


# --- the server ----------------------------------------------------------------------------


def _quote(value: str | Path) -> str:
    text = str(value)
    if '"' in text or "\\" in text or "\n" in text:
        raise ValueError(f"unsupported character in an rsyslog config value: {text!r}")
    return f'"{text}"'


def _listening(port: int) -> bool:
    """Whether 127.0.0.1:port is in LISTEN state, read from /proc (no probe connection)."""
    wanted = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp", encoding="ascii") as table:
            next(table)
            for line in table:
                fields = line.split()
                if fields[1] == wanted and fields[3] == "0A":
                    return True
        return False
    except OSError:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(("127.0.0.1", port)) == 0


class RsyslogServer:
    """A private rsyslogd receiving RFC 5425 syslog (and, optionally, RELP) over mutual TLS
    on 127.0.0.1."""

    def __init__(
        self,
        workdir: Path,
        *,
        permitted_peers: Iterable[str] = (PERMITTED_CLIENT,),
        binary: str | None = None,
        relp: bool = False,
    ) -> None:
        self.binary = binary or require_rsyslogd()
        if relp:
            require(RSYSLOG_RELP)
        self.relp = relp
        self.workdir = workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.output_dir = self.workdir / "received"
        self.output_dir.mkdir(exist_ok=True)
        self.pki = make_pki(self.workdir / "pki")
        self.host = "127.0.0.1"
        self.server_name = SERVER_NAME
        self.port = free_port()
        self.relp_port = free_port() if relp else None
        self.config_file = self.workdir / "rsyslog.conf"
        self.pid_file = self.workdir / "rsyslogd.pid"
        # rsyslogd -n writes its own messages (TLS errors, refused peers) to stderr.
        self.console_log = self.workdir / "rsyslogd-console.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.config_file.write_text(self._config(list(permitted_peers)), encoding="utf-8")
        self._check_config()

    # configuration ------------------------------------------------------------------------

    def _config(self, permitted_peers: list[str]) -> str:
        peers = ", ".join(_quote(peer) for peer in permitted_peers)
        per_app = f"{self.output_dir}/%app-name:::secpath-replace%.log"
        return f"""\
global(
  maxMessageSize="64k"
  workDirectory={_quote(self.workdir)}
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile={_quote(self.pki.ca_file)}
  defaultNetstreamDriverCertFile={_quote(self.pki.server_cert)}
  defaultNetstreamDriverKeyFile={_quote(self.pki.server_key)}
)
main_queue(queue.type="Direct")
module(load="imtcp"
  streamDriver.name="gtls"
  streamDriver.mode="1"
  streamDriver.authMode="x509/name"
  permittedPeer=[{peers}]
)
template(name="rawLine" type="string" string="%rawmsg%\\n")
template(name="perApp" type="string" string={_quote(per_app)})
ruleset(name="atna") {{
  action(type="omfile" dynaFile="perApp" template="rawLine")
}}
input(type="imtcp" address="127.0.0.1" port="{self.port}" ruleset="atna")
{self._relp_config(peers)}"""

    def _relp_config(self, peers: str) -> str:
        if self.relp_port is None:
            return ""
        # imrelp takes its own TLS settings (librelp does the TLS, not the gtls driver);
        # "name" checks the client certificate against the CA and the permitted names.
        return f"""\
module(load="imrelp" tls.tlslib="gnutls")
input(type="imrelp" address="127.0.0.1" port="{self.relp_port}" ruleset="atna"
  maxDataSize="64k"
  tls="on"
  tls.cacert={_quote(self.pki.ca_file)}
  tls.mycert={_quote(self.pki.server_cert)}
  tls.myprivkey={_quote(self.pki.server_key)}
  tls.authMode="name"
  tls.permittedPeer=[{peers}]
)
"""

    def _check_config(self) -> None:
        result = subprocess.run(
            [self.binary, "-N1", "-f", str(self.config_file)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"rsyslogd rejected its configuration:\n{result.stdout}\n{result.stderr}"
            )

    # lifecycle ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start rsyslogd (same port, same certificates) and wait until the port listens."""
        if self.running:
            return
        self.pid_file.unlink(missing_ok=True)
        console = open(self.console_log, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._process = subprocess.Popen(
                [self.binary, "-n", "-f", str(self.config_file), "-i", str(self.pid_file)],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        finally:
            console.close()
        deadline = time.monotonic() + START_SECONDS
        ports = [self.port] if self.relp_port is None else [self.port, self.relp_port]
        while not all(_listening(port) for port in ports):
            if self._process.poll() is not None:
                raise RuntimeError(f"rsyslogd exited at start:\n{self.diagnostics()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rsyslogd did not listen on {ports}:\n{self.diagnostics()}")
            time.sleep(0.05)

    def terminate(self) -> None:
        """Send SIGTERM without waiting: rsyslogd shuts down while clients may be sending."""
        if self.running and self._process is not None:
            self._process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM, then wait for rsyslogd to exit (up to about 2 s)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_SECONDS)
        self.pid_file.unlink(missing_ok=True)

    def __enter__(self) -> RsyslogServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # what arrived -------------------------------------------------------------------------

    def output_file(self, app_name: str) -> Path:
        return self.output_dir / f"{app_name}.log"

    def received_lines(self, app_name: str | None = None) -> list[str]:
        """The raw messages rsyslog wrote, one per line, for one APP-NAME or for all."""
        files = (
            [self.output_file(app_name)]
            if app_name is not None
            else sorted(self.output_dir.glob("*.log"))
        )
        lines: list[str] = []
        for path in files:
            if path.exists():
                text = path.read_text(encoding="utf-8", errors="replace")
                lines.extend(line for line in text.split("\n") if line)
        return lines

    def wait_for_lines(
        self, count: int, app_name: str | None = None, timeout: float = 30.0
    ) -> list[str]:
        """Bounded wait until at least ``count`` lines are there; returns what is there."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.received_lines(app_name)
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def diagnostics(self) -> str:
        parts = []
        for path in (self.console_log,):
            if path.exists():
                tail = path.read_text(encoding="utf-8", errors="replace")[-4000:]
                parts.append(f"--- {path.name}\n{tail}")
        return "\n".join(parts) or "(no rsyslogd output)"


def wait_until(check: Callable[[], bool], timeout: float = 60.0) -> bool:
    """A bounded wait for ``check``; the bound only keeps a broken run from hanging."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def sender_for(
    server: RsyslogServer,
    *,
    ca_file: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> TlsSyslogSender:
    """A sender that trusts ``server`` and presents the permitted client certificate."""
    return TlsSyslogSender.from_files(
        server.host,
        server.port,
        str(ca_file or server.pki.ca_file),
        str(cert or server.pki.client_cert),
        str(key or server.pki.client_key),
        server_name=server.server_name,
        timeout=5.0,
    )


def relp_sender_for(
    server: RsyslogServer,
    *,
    ca_file: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    timeout: float = 5.0,
) -> RelpSender:
    """A RELP sender that trusts ``server`` and presents the permitted client certificate."""
    assert server.relp_port is not None, "the server was made without relp=True"
    return RelpSender.from_files(
        server.host,
        server.relp_port,
        str(ca_file or server.pki.ca_file),
        str(cert or server.pki.client_cert),
        str(key or server.pki.client_key),
        server_name=server.server_name,
        timeout=timeout,
    )
