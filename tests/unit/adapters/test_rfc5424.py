"""RFC 5424 formatting and RFC 5425 framing: exact bytes, escaping, refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from carevault.adapters.syslog.rfc5424 import BOM, escape_param_value, format_message, frame

WHEN = datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=UTC)


def message(**overrides: object) -> bytes:
    fields: dict[str, object] = {
        "timestamp": WHEN,
        "hostname": "mymachine.example.com",
        "app_name": "evntslog",
        "procid": None,
        "msgid": "ID47",
        "structured_data": [],
        "message": "An application event log entry...",
    }
    fields.update(overrides)
    return format_message(**fields)  # type: ignore[arg-type]


def test_exact_bytes_of_rfc5424_example_1_with_a_microsecond_fraction() -> None:
    # RFC 5424 §6.5 example 1, the fraction written with six digits.
    got = message(pri=34, app_name="su", message="'su root' failed for lonvick on /dev/pts/8")
    assert got == (
        b"<34>1 2003-10-11T22:14:15.003000Z mymachine.example.com su - ID47 - "
        b"\xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8"
    )


def test_exact_bytes_with_structured_data_and_the_default_audit_pri() -> None:
    got = message(
        procid="4242",
        msgid="FHIR+AuditEvent",
        app_name="carevault",
        structured_data=[
            ("exampleSDID@32473", [("iut", "3"), ("eventSource", "Application")]),
            ("examplePriority@32473", [("class", "high")]),
        ],
        message='{"resourceType":"AuditEvent"}',
    )
    assert got == (
        b"<85>1 2003-10-11T22:14:15.003000Z mymachine.example.com carevault 4242 "
        b'FHIR+AuditEvent [exampleSDID@32473 iut="3" eventSource="Application"]'
        b'[examplePriority@32473 class="high"] \xef\xbb\xbf{"resourceType":"AuditEvent"}'
    )


def test_timestamp_is_converted_to_utc_with_z() -> None:
    plus_two = datetime(2024, 2, 29, 1, 30, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    got = message(timestamp=plus_two)
    assert b" 2024-02-28T23:30:00.000000Z " in got


def test_nilvalues() -> None:
    got = message(timestamp=None, hostname=None, app_name=None, procid=None, msgid=None, message="")
    assert got == b"<85>1 - - - - - -"


def test_msg_is_utf8_after_a_bom() -> None:
    got = message(message="Müller – 患者")
    head, _, body = got.partition(b" - " + BOM)
    assert head.endswith(b"ID47")
    assert body.decode("utf-8") == "Müller – 患者"


def test_param_value_escaping() -> None:
    assert escape_param_value('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    got = message(structured_data=[("x@32473", [("v", 'say "hi" \\ [ok]'), ("n", "Zoë")])])
    assert b'[x@32473 v="say \\"hi\\" \\\\ [ok\\]" n="Zo\xc3\xab"]' in got


def test_registered_sd_ids_need_no_enterprise_number() -> None:
    got = message(structured_data=[("origin", [("ip", "192.0.2.1")])])
    assert b'[origin ip="192.0.2.1"]' in got


@pytest.mark.parametrize(
    "sd_id",
    [
        "mySDID",  # no "@" and not registered by IANA
        "a b@32473",
        "a=b@32473",
        'a"b@32473',
        "a]b@32473",
        "@32473",
        "name@",
        "name@acme",
        "name@32473@1",
        "x" * 27 + "@32473",  # 33 characters
        "caf\u00e9@32473",
        "",
    ],
)
def test_invalid_sd_id_is_refused(sd_id: str) -> None:
    with pytest.raises(ValueError, match="SD-ID"):
        message(structured_data=[(sd_id, [("a", "b")])])


def test_enterprise_number_with_sub_identifiers_is_accepted() -> None:
    assert b"[name@32473.1.2]" in message(structured_data=[("name@32473.1.2", [])])


def test_duplicate_sd_id_is_refused() -> None:
    with pytest.raises(ValueError, match="more than once"):
        message(structured_data=[("x@32473", []), ("x@32473", [])])


@pytest.mark.parametrize("name", ["a b", "a=b", 'a"b', "a]b", "", "p" * 33])
def test_invalid_param_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="PARAM-NAME"):
        message(structured_data=[("x@32473", [(name, "v")])])


@pytest.mark.parametrize(
    ("app_name", "reason"),
    [
        ("my app", "printable US-ASCII"),
        ("caf\u00e9", "printable US-ASCII"),
        ("tab\there", "printable US-ASCII"),
        ("a" * 49, "longer than 48"),
        ("", "cannot be empty"),
    ],
)
def test_invalid_app_name_is_refused(app_name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"APP-NAME.*{reason}"):
        message(app_name=app_name)


def test_header_length_limits() -> None:
    assert message(app_name="a" * 48, hostname="h" * 255, procid="p" * 128, msgid="m" * 32)
    with pytest.raises(ValueError, match="HOSTNAME"):
        message(hostname="h" * 256)
    with pytest.raises(ValueError, match="PROCID"):
        message(procid="p" * 129)
    with pytest.raises(ValueError, match="MSGID"):
        message(msgid="m" * 33)


@pytest.mark.parametrize("pri", [-1, 192, True])
def test_invalid_pri_is_refused(pri: int) -> None:
    with pytest.raises(ValueError, match="PRI"):
        message(pri=pri)


def test_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        message(timestamp=datetime(2024, 1, 1, 12, 0, 0))


def test_unencodable_text_is_refused() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        message(message="lone \ud800 surrogate")


def test_frame_counts_octets_not_characters() -> None:
    syslog_msg = message(message="Müller, Zoë: 患者")
    assert len(syslog_msg) > len(syslog_msg.decode("utf-8"))
    framed = frame(syslog_msg)
    count, _, rest = framed.partition(b" ")
    assert rest == syslog_msg
    assert int(count) == len(syslog_msg)
    assert framed == str(len(syslog_msg)).encode() + b" " + syslog_msg


def test_frame_of_an_ascii_message() -> None:
    assert frame(b"<85>1 - - - - - -") == b"17 <85>1 - - - - - -"


def test_empty_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        frame(b"")
