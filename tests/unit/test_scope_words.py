"""The consent page says what each scope lets an app do in the person's words, in each of the
three languages, and never guesses what it does not know."""

from __future__ import annotations

import pytest

from carevault.web.i18n import messages
from carevault.web.scope_words import scope_sentence


def test_a_scope_reads_as_what_the_app_may_do_with_what() -> None:
    en = messages("en")
    assert scope_sentence("patient/*.rs", en) == "see: your whole record"
    assert scope_sentence("patient/Patient.u", en) == "add and change: your identity details"
    assert scope_sentence("patient/DocumentReference.cruds", en) == (
        "see, add and change, delete: your documents")
    assert scope_sentence("patient/Consent.read", en) == "see: who may see your record"


@pytest.mark.parametrize("lang", ["fr", "en", "de"])
def test_every_language_has_the_words(lang: str) -> None:
    words = messages(lang)
    said = scope_sentence("patient/*.cruds", words)
    assert words["scope_what_all"] in said and words["scope_delete"] in said
    assert words["consent_scopes"] and words["consent_identity"]


def test_an_unknown_resource_is_named_as_it_is_and_a_non_scope_is_shown_as_it_is() -> None:
    en = messages("en")
    assert scope_sentence("patient/Observation.rs", en) == "see: Observation"
    assert scope_sentence("openid", en) == "openid"
    assert scope_sentence("patient/*.x", en) == "patient/*.x"


def test_the_consent_page_may_send_its_form_on_to_the_apps_redirect_uri_only() -> None:
    from carevault.web.oauth_consent import consent_page_csp

    base = "default-src 'self'; frame-ancestors 'none'; form-action 'self'"
    assert consent_page_csp("https://app.example:8443/cb?x=1") == (
        base + " https://app.example:8443")
    assert consent_page_csp("com.example.diary:/callback") == base + " com.example.diary:"
    # Nothing that could smuggle another directive or a wildcard in.
    assert consent_page_csp("https://a.example; script-src *") == base
    assert consent_page_csp("javascript:alert(1)") == base
