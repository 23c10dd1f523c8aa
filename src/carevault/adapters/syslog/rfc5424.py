"""RFC 5424 syslog messages and their RFC 5425 octet-counting frame.

``format_message`` builds ``SYSLOG-MSG = HEADER SP STRUCTURED-DATA [SP MSG]`` (RFC 5424 §6):

- PRI: ``<PRIVAL>`` with PRIVAL = facility * 8 + severity, 0..191 (§6.2.1). The default, 85, is
  facility 10 (security/authorization, "authpriv") with severity 5 (notice), the values IHE ITI
  TF-2 §3.20 (Record Audit Event [ITI-20]) asks of audit records.
- VERSION 1 (§6.2.2).
- TIMESTAMP: RFC 3339 in UTC with a microsecond fraction and an upper-case ``T`` and ``Z``
  (§6.2.3); a naive datetime is refused, an aware one is converted to UTC.
- HOSTNAME, APP-NAME, PROCID, MSGID: PRINTUSASCII (%d33-126) of at most 255, 48, 128 and 32
  characters (§6.2.4-6.2.7). ``None`` is the NILVALUE ``-``; an empty string is refused.
- STRUCTURED-DATA (§6.3): the NILVALUE when there is no element. SD-ID and PARAM-NAME are
  SD-NAMEs: 1 to 32 PRINTUSASCII except ``=``, space, ``]`` and ``"``. An SD-ID without ``@`` is
  reserved to IANA registration (§6.3.2, §9.2: ``timeQuality``, ``origin``, ``meta``); any other
  must be ``name@<private enterprise number>`` (§7.2.2) and may occur only once per message.
  PARAM-VALUE is UTF-8 with ``"``, ``\\`` and ``]`` escaped by a backslash (§6.3.3).
- MSG: UTF-8 preceded by the byte order mark EF BB BF, as §6.4 requires of a UTF-8 MSG; it is
  left out (with its separating space) when the message is empty.

``frame`` prefixes the octet count and a space (RFC 5425 §4.3: ``SYSLOG-FRAME = MSG-LEN SP
SYSLOG-MSG``); the count is of bytes, not characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

NILVALUE = "-"
BOM = b"\xef\xbb\xbf"
DEFAULT_PRI = 10 * 8 + 5  # facility 10 (security/authorization), severity 5 (notice)
MAX_PRIVAL = 191

HOSTNAME_MAX = 255
APP_NAME_MAX = 48
PROCID_MAX = 128
MSGID_MAX = 32
SD_NAME_MAX = 32

# SD-IDs without "@" that IANA has registered (RFC 5424 §7 and §9.2); others need an "@".
REGISTERED_SD_IDS = frozenset({"timeQuality", "origin", "meta"})

_PRINTUSASCII = re.compile(r"[\x21-\x7e]+")
_SD_NAME_FORBIDDEN = frozenset('= ]"')
_ENTERPRISE_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)*")
_PARAM_VALUE_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "]": "\\]"})

StructuredData = Sequence[tuple[str, Sequence[tuple[str, str]]]]


def format_message(
    *,
    timestamp: datetime | None,
    hostname: str | None,
    app_name: str | None,
    procid: str | None,
    msgid: str | None,
    structured_data: StructuredData,
    message: str,
    pri: int = DEFAULT_PRI,
) -> bytes:
    """One RFC 5424 SYSLOG-MSG as bytes; raises ``ValueError`` naming the invalid field."""
    if isinstance(pri, bool) or not isinstance(pri, int) or not 0 <= pri <= MAX_PRIVAL:
        raise ValueError(f"PRI must be an integer from 0 to {MAX_PRIVAL}, got {pri!r}")
    header = " ".join(
        (
            f"<{pri}>1",
            _timestamp(timestamp),
            _header_field("HOSTNAME", hostname, HOSTNAME_MAX),
            _header_field("APP-NAME", app_name, APP_NAME_MAX),
            _header_field("PROCID", procid, PROCID_MAX),
            _header_field("MSGID", msgid, MSGID_MAX),
        )
    )
    head = f"{header} {_structured_data(structured_data)}".encode()
    if not message:
        return head
    return head + b" " + BOM + _utf8("MSG", message)


def frame(message: bytes) -> bytes:
    """The RFC 5425 octet-counting frame of one SYSLOG-MSG: ``b"<length> " + message``."""
    if not message:
        raise ValueError("a syslog message cannot be empty (MSG-LEN starts with a nonzero digit)")
    return b"%d %s" % (len(message), message)


def escape_param_value(value: str) -> str:
    """PARAM-VALUE escaping of RFC 5424 §6.3.3: a backslash before ``"``, ``\\`` and ``]``."""
    return value.translate(_PARAM_VALUE_ESCAPES)


def _timestamp(value: datetime | None) -> str:
    if value is None:
        return NILVALUE
    if not isinstance(value, datetime):
        raise ValueError(f"TIMESTAMP must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("TIMESTAMP must be timezone-aware (a naive datetime has no offset)")
    utc = value.astimezone(UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond:06d}Z"
    )


def _header_field(name: str, value: str | None, limit: int) -> str:
    if value is None:
        return NILVALUE
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string or None, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} cannot be empty: pass None for the NILVALUE")
    if len(value) > limit:
        raise ValueError(f"{name} is longer than {limit} characters: {len(value)}")
    if not _PRINTUSASCII.fullmatch(value):
        raise ValueError(f"{name} must be printable US-ASCII without spaces (%d33-126)")
    return value


def _sd_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} must be a non-empty string")
    if len(value) > SD_NAME_MAX:
        raise ValueError(f"{kind} {value!r} is longer than {SD_NAME_MAX} characters")
    if not _PRINTUSASCII.fullmatch(value) or _SD_NAME_FORBIDDEN.intersection(value):
        raise ValueError(
            f"{kind} {value!r} must be printable US-ASCII without '=', space, ']' or '\"'"
        )
    return value


def _sd_id(value: str) -> str:
    _sd_name("SD-ID", value)
    if "@" not in value:
        if value not in REGISTERED_SD_IDS:
            raise ValueError(
                f"SD-ID {value!r} has no '@': names without one are reserved to IANA "
                "registration; use name@<private enterprise number>"
            )
        return value
    name, _, enterprise = value.partition("@")
    if not name or "@" in enterprise:
        raise ValueError(f"SD-ID {value!r} must be name@<private enterprise number>")
    if not _ENTERPRISE_NUMBER.fullmatch(enterprise):
        raise ValueError(f"SD-ID {value!r}: {enterprise!r} is not a private enterprise number")
    return value


def _structured_data(elements: StructuredData) -> str:
    if isinstance(elements, str | bytes):
        raise ValueError("STRUCTURED-DATA must be a list of (SD-ID, [(name, value), ...])")
    if not elements:
        return NILVALUE
    seen: set[str] = set()
    parts: list[str] = []
    for element in elements:
        sd_id, params = element
        _sd_id(sd_id)
        if sd_id in seen:
            raise ValueError(f"SD-ID {sd_id!r} occurs more than once in the message")
        seen.add(sd_id)
        rendered = [sd_id]
        for param_name, param_value in params:
            _sd_name("PARAM-NAME", param_name)
            if not isinstance(param_value, str):
                raise ValueError(f"PARAM-VALUE of {param_name!r} must be a string")
            _utf8(f"PARAM-VALUE of {param_name!r}", param_value)
            rendered.append(f'{param_name}="{escape_param_value(param_value)}"')
        parts.append("[" + " ".join(rendered) + "]")
    return "".join(parts)


def _utf8(name: str, value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{name} is not encodable as UTF-8: {error.reason}") from error
