"""The PDF scan for actions that run something (`check_content`): every spelling of the names
JavaScript and Launch is found, in one pass over the bytes whatever they hold."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carevault.domain.documents import check_content
from carevault.domain.errors import UnsupportedMediaType

# The definition, written the slow obvious way (PDF 32000-1 §7.3.5): split the bytes into names,
# decode each name's #xx escapes, compare.
_NAME = re.compile(rb"/((?:[^\x00\t\n\x0c\r /<>\[\](){}%#]|#[0-9A-Fa-f]{2})+)")
_HEX = re.compile(rb"#([0-9A-Fa-f]{2})")


def names_an_action(data: bytes) -> bool:
    for name in _NAME.finditer(data):
        decoded = _HEX.sub(lambda escape: bytes([int(escape.group(1), 16)]), name.group(1))
        if decoded in (b"JavaScript", b"Launch"):
            return True
    return False


def refused(data: bytes) -> bool:
    try:
        check_content("application/pdf", b"%PDF-1.7\n" + data)
    except UnsupportedMediaType:
        return True
    return False


def spellings(name: bytes) -> st.SearchStrategy[bytes]:
    """``name`` with any of its characters written #xx, in either case of hex digit."""
    return st.tuples(
        *(
            st.sampled_from([bytes([c]), b"#%02x" % c, b"#%02X" % c, b"#%02x" % (c ^ 0x20)])
            for c in name
        )
    ).map(b"".join)


_pieces = st.one_of(
    spellings(b"JavaScript"),
    spellings(b"Launch"),
    st.sampled_from([b"/", b" ", b"#", b"#4", b"#zz", b"<<", b">>", b"(", b"%", b"\n", b"S"]),
    st.binary(max_size=4),
)


@settings(max_examples=600, deadline=None)
@given(st.lists(_pieces, max_size=12).map(b"".join))
def test_the_scan_finds_exactly_the_names_the_definition_finds(data: bytes) -> None:
    assert refused(data) == names_an_action(data)


@pytest.mark.parametrize(
    ("data", "runs"),
    [
        (b"<< /S /JavaScript /JS (app.alert(1)) >>", True),
        (b"/Java#53cript", True),  # S written #53
        (b"/#4a#61#76#61#53#63#72#69#70#74", True),  # every character escaped, lower case
        (b"/#4C#61unch", True),
        (b"/Java#73cript", False),  # "Javascript": names are case-sensitive
        (b"/JavaScripts", False),  # another name
        (b"/JavaScript#41", False),  # the escape continues the name: "JavaScriptA"
        (b"/JavaScript#zz", True),  # not an escape: the name ends before it
        (b"/Launch/Next", True),
        (b"(a string) /Title", False),
    ],
)
def test_spellings_of_the_actions(data: bytes, runs: bool) -> None:
    assert refused(data) is runs
    assert names_an_action(data) is runs  # the examples agree with the definition too


def test_a_crafted_name_of_millions_of_escapes_is_scanned_not_decoded() -> None:
    # One name of 15 MB written #41#41... (what took 6.4 s to decode name by name): the scan
    # answers, and a JavaScript action after it is still found.
    crafted = b"/" + b"#41" * 5_000_000
    assert refused(crafted) is False
    assert refused(crafted + b" /S /JavaScript") is True
