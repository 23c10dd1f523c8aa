"""A SMART Backend Services client, as a hospital's system or a professional's software would
write it with any JOSE library (here PyJWT and httpx, not CareVault's code).

It signs a short client assertion with the certificate's key (RFC 7523 ``private_key_jwt``,
the certificate chain in ``x5c``), trades it for a 5-minute access token and prints the token;
the scope actually granted goes to standard error (CareVault grants no more than the client may
hold, whatever it asks for). A system names the professional it acts for with ``--act``.

    .venv/bin/python examples/backend_token.py --card var/demo-card --client-id HP-… \\
        --scope 'system/*.rs'
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
import uuid
from pathlib import Path

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="http://127.0.0.1:8000", help="CareVault's address")
    parser.add_argument("--card", type=Path, required=True,
                        help="directory with cert.pem, chain.pem and key.pem")
    parser.add_argument("--client-id", required=True, help="the certificate's client_id")
    parser.add_argument("--scope", default="system/*.rs")
    parser.add_argument("--act", help="a system: the identifier of the professional it acts for")
    args = parser.parse_args()

    chain = [x509.load_pem_x509_certificate((args.card / name).read_bytes())
             for name in ("cert.pem", "chain.pem")]
    now = int(time.time())
    claims = {"iss": args.client_id, "sub": args.client_id, "aud": f"{args.base}/oauth/token",
              "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex}
    if args.act:
        claims["act"] = {"sub": args.act}
    assertion = jwt.encode(
        claims, (args.card / "key.pem").read_bytes(), algorithm="ES256",
        headers={"x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in chain]})
    answer = httpx.post(f"{args.base}/oauth/token", data={
        "grant_type": "client_credentials", "scope": args.scope,
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
    if answer.status_code != 200:
        sys.exit(f"token refused ({answer.status_code}): {answer.text}")
    grant = answer.json()
    print(f"granted: {grant['scope']}", file=sys.stderr)
    print(grant["access_token"])


if __name__ == "__main__":
    main()
