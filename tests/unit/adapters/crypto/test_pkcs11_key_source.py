"""The ``pkcs11:`` key source string: what it names, and the PIN that must never be in it."""

from __future__ import annotations

import pytest
from pkcs11 import Attribute

from carevault.adapters.crypto import KeySourceError, Pkcs11KeySource
from carevault.adapters.crypto.pkcs11_kek import KEK_TEMPLATE, wrap_aad

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


def test_the_documented_example_parses() -> None:
    source = Pkcs11KeySource.parse(
        f"pkcs11:module={SOFTHSM};token=carevault;pin-env=CAREVAULT_HSM_PIN"
    )
    assert source == Pkcs11KeySource(module=SOFTHSM, token="carevault", pin_env="CAREVAULT_HSM_PIN")


def test_attributes_come_in_any_order_and_values_may_be_percent_encoded() -> None:
    source = Pkcs11KeySource.parse(
        "pkcs11:pin-env=HSM_PIN;token=Care%20Vault%3B%20prod;module=/opt/hsm/lib%20p11.so;"
    )
    assert source.token == "Care Vault; prod"
    assert source.module == "/opt/hsm/lib p11.so"
    assert source.pin_env == "HSM_PIN"


@pytest.mark.parametrize(
    ("key_source", "message"),
    [
        (f"pkcs11:module={SOFTHSM};token=t;pin=1234", "must not contain the PIN"),
        (f"pkcs11:module={SOFTHSM};token=t;pin-value=1234", "must not contain the PIN"),
        (f"pkcs11:module={SOFTHSM};token=t;pin-source=file:/pin", "must not contain the PIN"),
        (f"pkcs11:module={SOFTHSM};token=t", "lacks pin-env"),
        ("pkcs11:token=t;pin-env=P", "lacks module"),
        ("pkcs11:", "lacks module, token, pin-env"),
        (
            f"pkcs11:module={SOFTHSM};token=t;pin-env=P;slot=0",
            "unknown key source attribute 'slot'",
        ),
        (f"pkcs11:module={SOFTHSM};token=;pin-env=P", "'token' has no value"),
        (f"pkcs11:module={SOFTHSM};token;pin-env=P", "'token' has no value"),
        (f"pkcs11:module={SOFTHSM};token=a;token=b;pin-env=P", "'token' is given twice"),
        ("pkcs11:module=libsofthsm2.so;token=t;pin-env=P", "absolute path"),
        (f"pkcs11:module={SOFTHSM};token=t;pin-env=HSM-PIN", "not an environment variable"),
        (f"file:{SOFTHSM}", "unsupported key source 'file'"),
    ],
)
def test_bad_key_sources_are_refused_with_the_reason(key_source: str, message: str) -> None:
    with pytest.raises(KeySourceError, match=message) as failure:
        Pkcs11KeySource.parse(key_source)
    assert "1234" not in str(failure.value)


def test_the_pin_comes_from_the_named_variable() -> None:
    source = Pkcs11KeySource(module=SOFTHSM, token="t", pin_env="HSM_PIN")
    assert source.pin({"HSM_PIN": "0000-1111"}) == "0000-1111"
    for environ in ({}, {"HSM_PIN": ""}, {"OTHER": "1"}):
        with pytest.raises(KeySourceError, match="HSM_PIN is not set"):
            source.pin(environ)


def test_a_wrapped_key_names_its_kek_in_the_associated_data() -> None:
    assert wrap_aad("kek-0002") == b"carevault/kek-wrap/v1\x00kek-0002"


def test_keks_are_generated_sensitive_and_not_extractable() -> None:
    assert KEK_TEMPLATE[Attribute.SENSITIVE] is True
    assert KEK_TEMPLATE[Attribute.EXTRACTABLE] is False
    assert KEK_TEMPLATE[Attribute.PRIVATE] is True
