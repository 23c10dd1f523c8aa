"""A secure-messaging mailbox as the directory publishes it: an mCSD ``Endpoint``.

Which shape, and where it comes from (so that any FHIR client can find where and to whom to
encrypt, not only CareVault's):

- ``meta.profile``: IHE mCSD 4.0 ``IHE.mCSD.Endpoint`` (input/fsh/endpoint.fsh: no
  ``implicitRules`` or ``modifierExtension``, ``managingOrganization`` 1..1);
- ``connectionType``: ``secure-email`` of HL7's endpoint-connection-type code system (R4: "Email
  delivery using a digital certificate to encrypt the content using the public key, receiver
  must have the private key to decrypt the content");
- ``payloadType``: ``any`` of HL7's endpoint-payload-type (a message carries any content);
  ``payloadMimeType``: ``application/pkcs7-mime`` (RFC 8551, what is submitted and delivered);
- ``address``: the ``mailto:`` URI (RFC 6068) of the mailbox, as FHIR's own Direct example
  has it; the same URI is the Endpoint's ``identifier`` (system ``urn:ietf:rfc:3986``), so that
  ``Endpoint?identifier=urn:ietf:rfc:3986|mailto:…`` finds the mailbox of an address;
- the encryption certificates: HL7 Australia's ``encryption-certificate-pem-x509`` extension
  (AU Base, trial use, on Endpoint: "an X509 certificate in PEM format as per RFC 7468"), one
  per valid, unrevoked certificate. FHIR R4 has no element for it (mCSD's own notes name the
  gap) and this is the published extension made for exactly this.

`encryption_certificates` reads the certificates back out of an Endpoint: the client's side.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

JsonObject = dict[str, Any]

MCSD_ENDPOINT = "https://profiles.ihe.net/ITI/mCSD/StructureDefinition/IHE.mCSD.Endpoint"
CONNECTION_TYPES = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
SECURE_EMAIL = "secure-email"
PAYLOAD_TYPES = "http://terminology.hl7.org/CodeSystem/endpoint-payload-type"
SMIME_MEDIA_TYPE = "application/pkcs7-mime"
ENCRYPTION_CERTIFICATE_URL = (
    "http://hl7.org.au/fhir/StructureDefinition/encryption-certificate-pem-x509"
)
URI_SYSTEM = "urn:ietf:rfc:3986"
STATUSES = ("active", "suspended", "off")


@dataclass(frozen=True)
class MailEndpoint:
    """What the directory knows of one mailbox; `endpoint_resource` writes it as FHIR."""

    id: str
    address: str  # hp-123456@msg.example
    holder: str  # the holder's name, for Endpoint.name
    status: str  # one of STATUSES
    certificates_pem: tuple[str, ...]  # valid and unrevoked now, newest first
    organization_id: str | None  # the managing organization, if the holder works for one
    platform: str  # who runs the mailbox otherwise (the messaging domain)


def mailto(address: str) -> str:
    return f"mailto:{address}"


def endpoint_resource(endpoint: MailEndpoint) -> JsonObject:
    """The mCSD Endpoint of a mailbox. Revoked and expired certificates are never listed; a
    mailbox that cannot receive is ``off`` (``suspended`` while its holder's licence is)."""
    managing: JsonObject = (
        {"reference": f"Organization/{endpoint.organization_id}"}
        if endpoint.organization_id is not None
        else {
            "identifier": {"system": "urn:ietf:rfc:1035", "value": endpoint.platform},
            "display": f"CareVault secure messaging ({endpoint.platform})",
        }
    )
    resource: JsonObject = {
        "resourceType": "Endpoint",
        "id": endpoint.id,
        "meta": {"profile": [MCSD_ENDPOINT]},
    }
    if endpoint.certificates_pem:
        resource["extension"] = [
            {"url": ENCRYPTION_CERTIFICATE_URL, "valueString": pem}
            for pem in endpoint.certificates_pem
        ]
    resource.update(
        {
            "identifier": [{"system": URI_SYSTEM, "value": mailto(endpoint.address)}],
            "status": endpoint.status,
            "connectionType": {
                "system": CONNECTION_TYPES,
                "code": SECURE_EMAIL,
                "display": "Secure email",
            },
            "name": f"Secure messaging: {endpoint.holder}",
            "managingOrganization": managing,
            "payloadType": [
                {
                    "coding": [{"system": PAYLOAD_TYPES, "code": "any", "display": "Any"}],
                    "text": "S/MIME 4.0 (RFC 8551): signed, then encrypted to these certificates",
                }
            ],
            "payloadMimeType": [SMIME_MEDIA_TYPE],
            "address": mailto(endpoint.address),
        }
    )
    return resource


def is_mail_endpoint(resource: JsonObject, address: str) -> bool:
    """Whether ``resource`` is the secure-email Endpoint of ``address`` (in any case)."""
    connection = resource.get("connectionType")
    return (
        resource.get("resourceType") == "Endpoint"
        and isinstance(connection, dict)
        and connection.get("system") == CONNECTION_TYPES
        and connection.get("code") == SECURE_EMAIL
        and str(resource.get("address", "")).lower() == mailto(address).lower()
    )


def encryption_certificates(resource: JsonObject) -> list[bytes]:
    """The PEM certificates an Endpoint publishes, in its order. A value that is the base64 of
    the PEM text (as HL7 Australia's own example writes it) is read too."""
    found = []
    extensions = resource.get("extension")
    for extension in extensions if isinstance(extensions, Sequence) else ():
        if not isinstance(extension, dict) or extension.get("url") != ENCRYPTION_CERTIFICATE_URL:
            continue
        value = extension.get("valueString")
        if not isinstance(value, str):
            continue
        if "-----BEGIN" not in value:
            try:
                value = base64.b64decode(value, validate=True).decode("ascii")
            except (binascii.Error, UnicodeDecodeError):
                continue
        found.append(value.encode("ascii", errors="replace"))
    return found
