"""Key-encryption keys inside a PKCS#11 token (an HSM; SoftHSM2 in tests).

The key source names the module, the token and the environment variable that holds the PIN::

    pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=carevault;pin-env=CAREVAULT_HSM_PIN

Values may be percent-encoded (``token=care%20vault``). The PIN itself is never part of the
string: key source strings end up in settings dumps, process listings and logs. The token is
found by its label, because a slot id is assigned when a token is initialized and changes.

Each KEK is an AES-256 secret key generated in the token, labelled (and with ``CKA_ID``) with its
KEK id, ``CKA_SENSITIVE`` true and ``CKA_EXTRACTABLE`` false, so its value never leaves the HSM,
and allowed to encrypt and decrypt only (not to wrap other token keys out, sign or derive). A data
key is wrapped by AES-256-GCM *inside the token*: ``wrapped = nonce (12) || ciphertext (32) ||
tag (16)``, with ``carevault/kek-wrap/v1 0x00 <kek id>`` as associated data. GCM over the data
key, rather than ``C_WrapKey`` with ``CKM_AES_KEY_WRAP_PAD``, because wrapping a key the HSM did
not generate means first importing it as a token object, and unwrapping means creating an
extractable, non-sensitive object and reading it back: three calls instead of one (5k instead
of 18k round trips/s on SoftHSM) and a pattern HSM policies often forbid. The price is a nonce
per wrap: random 96-bit nonces are safe for 2**32 wraps per KEK (NIST SP 800-38D §8.3), far
more than the document versions one KEK sees between rotations.

One PKCS#11 session per store, logged in as the user. python-pkcs11 serializes operations on a
session, so the store is safe to share between threads (operations on it run one at a time).
A PKCS#11 module reads its configuration once per process, when it is first loaded (SoftHSM:
``SOFTHSM2_CONF``), and a session does not survive ``fork``: open the store in the process that
uses it, after forking.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import unquote

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    EncryptedDataInvalid,
    EncryptedDataLenRange,
    GeneralError,
    MultipleObjectsReturned,
    MultipleTokensReturned,
    NoSuchKey,
    NoSuchToken,
    PKCS11Error,
    UserAlreadyLoggedIn,
)
from pkcs11.mechanisms import GCMParams

from carevault.adapters.crypto.envelope import DATA_KEY_BYTES, NONCE_BYTES, TAG_BYTES
from carevault.adapters.crypto.errors import DecryptionFailed, KeySourceError, UnknownKek
from carevault.adapters.crypto.keyring import check_kek_id, sorted_kek_ids

__all__ = ["KEK_TEMPLATE", "Pkcs11Kek", "Pkcs11KekStore", "Pkcs11KeySource", "wrap_aad"]

_SCHEME = "pkcs11"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WRAPPED_BYTES = NONCE_BYTES + DATA_KEY_BYTES + TAG_BYTES
# What SoftHSM (and PKCS#11 modules generally) answer to a tag that does not verify.
_AUTHENTICATION_FAILURES = (GeneralError, EncryptedDataInvalid, EncryptedDataLenRange)

# Attributes of every KEK generated in the token, beyond those python-pkcs11 sets from the
# capabilities (ENCRYPT and DECRYPT true; WRAP, UNWRAP, SIGN, VERIFY, DERIVE false).
KEK_TEMPLATE: dict[Attribute, Any] = {
    Attribute.PRIVATE: True,  # invisible and unusable without logging in
    Attribute.SENSITIVE: True,  # its value cannot be read
    Attribute.EXTRACTABLE: False,  # nor wrapped out by another key
    Attribute.MODIFIABLE: False,
    Attribute.COPYABLE: False,
}


@dataclass(frozen=True, slots=True)
class Pkcs11KeySource:
    """A parsed ``pkcs11:`` key source; the PIN is read from ``pin_env`` when opening."""

    module: str
    token: str
    pin_env: str

    @classmethod
    def parse(cls, key_source: str) -> Pkcs11KeySource:
        scheme, _, rest = key_source.partition(":")
        if scheme != _SCHEME:
            raise KeySourceError(f"unsupported key source {scheme!r}: expected 'pkcs11:…'")
        fields: dict[str, str] = {}
        for part in filter(None, rest.split(";")):
            name, equals, value = part.partition("=")
            if name in ("pin", "pin-value", "pin-source"):
                raise KeySourceError(
                    "the key source must not contain the PIN: name the environment variable "
                    "that holds it with 'pin-env=VARIABLE'"
                )
            if name not in ("module", "token", "pin-env"):
                raise KeySourceError(
                    f"unknown key source attribute {name!r}: expected module, token, pin-env"
                )
            if not equals or not value:
                raise KeySourceError(f"key source attribute {name!r} has no value")
            if name in fields:
                raise KeySourceError(f"key source attribute {name!r} is given twice")
            fields[name] = unquote(value)
        missing = [name for name in ("module", "token", "pin-env") if name not in fields]
        if missing:
            raise KeySourceError(f"the pkcs11 key source lacks {', '.join(missing)}")
        if not os.path.isabs(fields["module"]):
            # A bare name would be searched for in the library path: name the file exactly.
            raise KeySourceError("the PKCS#11 module must be an absolute path")
        if not _ENV_NAME.fullmatch(fields["pin-env"]):
            raise KeySourceError(f"pin-env {fields['pin-env']!r} is not an environment variable")
        return cls(module=fields["module"], token=fields["token"], pin_env=fields["pin-env"])

    def pin(self, environ: Mapping[str, str]) -> str:
        pin = environ.get(self.pin_env)
        if not pin:
            raise KeySourceError(f"the HSM PIN variable {self.pin_env} is not set")
        return pin


def wrap_aad(kek_id: str) -> bytes:
    """The associated data of a wrapped data key: it names the KEK that wrapped it."""
    return b"carevault/kek-wrap/v1\x00" + kek_id.encode("ascii")


class _TokenAesKey(Protocol):
    # python-pkcs11's type stubs leave the encrypt/decrypt mixins off `SecretKey`; its runtime
    # class has them. This names what a KEK uses.
    def encrypt(self, data: bytes, **kwargs: Any) -> bytes | Iterator[bytes]: ...

    def decrypt(self, data: bytes, **kwargs: Any) -> bytes | Iterator[bytes]: ...


class Pkcs11Kek:
    """A KEK that lives in the token; this object only holds its handle."""

    __slots__ = ("_aad", "_id", "_key")

    def __init__(self, kek_id: str, key: pkcs11.SecretKey) -> None:
        self._id = check_kek_id(kek_id)
        self._key = cast(_TokenAesKey, key)
        self._aad = wrap_aad(kek_id)

    def __repr__(self) -> str:
        return f"Pkcs11Kek(kek_id={self._id!r})"

    @property
    def kek_id(self) -> str:
        return self._id

    def wrap(self, data_key: bytes) -> bytes:
        if len(data_key) != DATA_KEY_BYTES:
            raise ValueError("a data key is 256 bits")
        nonce = os.urandom(NONCE_BYTES)
        try:
            sealed = self._key.encrypt(
                data_key, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, self._aad)
            )
        except PKCS11Error as error:
            raise KeySourceError(f"the HSM could not wrap with {self._id}: {error!r}") from error
        assert isinstance(sealed, bytes)  # bytes in, bytes out (only iterables stream)
        return nonce + sealed

    def unwrap(self, wrapped: bytes) -> bytes:
        if len(wrapped) != _WRAPPED_BYTES:
            raise DecryptionFailed(f"the wrapped key under {self._id!r} has the wrong length")
        nonce, sealed = wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:]
        try:
            data_key = self._key.decrypt(
                sealed, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, self._aad)
            )
        except _AUTHENTICATION_FAILURES:
            raise DecryptionFailed(
                f"the wrapped key does not open under {self._id!r}: another KEK, or altered"
            ) from None
        except PKCS11Error as error:
            raise KeySourceError(f"the HSM could not unwrap with {self._id}: {error!r}") from error
        assert isinstance(data_key, bytes)
        return data_key


class Pkcs11KekStore:
    """The KEKs of one token, through one logged-in read/write session."""

    def __init__(self, session: pkcs11.Session, token_label: str) -> None:
        self._session = session
        self._token_label = token_label
        # Management calls (search, generate, destroy) run one at a time; wrap and unwrap rely
        # on python-pkcs11's own per-session operation lock.
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(
        cls, source: Pkcs11KeySource, environ: Mapping[str, str] | None = None
    ) -> Pkcs11KekStore:
        """Load the module, find the token by label and log in with the PIN from ``environ``."""
        pin = source.pin(os.environ if environ is None else environ)
        try:
            library = pkcs11.lib(source.module)
        except PKCS11Error as error:
            raise KeySourceError(
                f"cannot load the PKCS#11 module {source.module}: {error}"
            ) from None
        try:
            token = library.get_token(token_label=source.token)
        except NoSuchToken:
            raise KeySourceError(f"no PKCS#11 token labelled {source.token!r}") from None
        except MultipleTokensReturned:
            raise KeySourceError(
                f"several PKCS#11 tokens are labelled {source.token!r}: labels must be unique"
            ) from None
        try:
            session = token.open(rw=True, user_pin=pin)
        except UserAlreadyLoggedIn:
            # Login state belongs to the application, not the session: another store in this
            # process already logged in, and this session shares that login.
            session = token.open(rw=True)
        except PKCS11Error as error:
            raise KeySourceError(
                f"the token {source.token!r} refused the PIN in {source.pin_env}: "
                f"{type(error).__name__}"
            ) from None
        return cls(session, source.token)

    def __repr__(self) -> str:
        return f"Pkcs11KekStore(token={self._token_label!r})"

    def kek_ids(self) -> list[str]:
        with self._lock:
            labels = [str(key[Attribute.LABEL]) for key in self._aes_keys({})]
        return sorted_kek_ids(labels)

    def create_kek(self, kek_id: str) -> Pkcs11Kek:
        check_kek_id(kek_id)
        with self._lock:
            if self._aes_keys({Attribute.LABEL: kek_id}):
                raise KeySourceError(f"the key-encryption key {kek_id} already exists")
            try:
                key = self._session.generate_key(
                    KeyType.AES,
                    256,
                    id=kek_id.encode("ascii"),
                    label=kek_id,
                    store=True,
                    capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                    template=KEK_TEMPLATE,
                )
            except PKCS11Error as error:
                raise KeySourceError(f"the HSM could not create {kek_id}: {error!r}") from error
        return Pkcs11Kek(kek_id, key)

    def open_kek(self, kek_id: str) -> Pkcs11Kek:
        try:
            check_kek_id(kek_id)
        except ValueError:
            raise UnknownKek(kek_id) from None
        with self._lock:
            key = self._find(kek_id)
            # Refuse a key someone imported or generated by hand that could leave the HSM.
            if key[Attribute.EXTRACTABLE] or not key[Attribute.SENSITIVE]:
                raise KeySourceError(f"{kek_id} in the token is extractable: refusing to use it")
        return Pkcs11Kek(kek_id, key)

    def destroy_kek(self, kek_id: str) -> None:
        with self._lock:
            key = self._find(kek_id)
            try:
                key.destroy()
            except PKCS11Error as error:
                raise KeySourceError(f"the HSM could not destroy {kek_id}: {error!r}") from error

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._session.close()

    def _aes_keys(self, extra: dict[Attribute, Any]) -> list[pkcs11.SecretKey]:
        template = {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.AES,
            Attribute.TOKEN: True,
            **extra,
        }
        # Drain the search at once: python-pkcs11 holds the session's lock while it is open.
        return [cast(pkcs11.SecretKey, key) for key in self._session.get_objects(template)]

    def _find(self, kek_id: str) -> pkcs11.SecretKey:
        try:
            key = self._session.get_key(
                object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=kek_id
            )
        except NoSuchKey:
            raise UnknownKek(kek_id) from None
        except MultipleObjectsReturned:
            raise KeySourceError(f"several keys in the token are labelled {kek_id}") from None
        assert isinstance(key, pkcs11.SecretKey)
        return key
