"""AES-256-GCM encryption of secrets at rest."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controller.crypto import KEY_BYTES, NONCE_BYTES, VERSION, DecryptionError, SecretBox

TAG_BYTES = 16
HEADER_BYTES = 1 + NONCE_BYTES


@pytest.fixture
def key() -> bytes:
    return os.urandom(KEY_BYTES)


@pytest.fixture
def box(key: bytes) -> SecretBox:
    return SecretBox(key)


@pytest.mark.parametrize(
    "plaintext", [b"", b"x", b"wireguard private key", bytes(range(256)), os.urandom(10_000)]
)
def test_round_trip(box: SecretBox, plaintext: bytes) -> None:
    blob = box.encrypt(plaintext)
    assert box.decrypt(blob) == plaintext


def test_round_trip_with_context(box: SecretBox) -> None:
    blob = box.encrypt(b"secret", b"vpn_config:42")
    assert box.decrypt(blob, b"vpn_config:42") == b"secret"


def test_another_box_with_the_same_key_decrypts(key: bytes) -> None:
    blob = SecretBox(key).encrypt(b"persisted", b"ctx")
    assert SecretBox(bytes(key)).decrypt(blob, b"ctx") == b"persisted"


def test_blob_layout_is_version_nonce_ciphertext_tag(key: bytes, box: SecretBox) -> None:
    plaintext = b"layout check"
    blob = box.encrypt(plaintext, b"ctx")
    assert blob[0] == VERSION == 1
    assert len(blob) == HEADER_BYTES + len(plaintext) + TAG_BYTES
    # The documented layout really is AES-GCM: decrypt it independently.
    nonce = blob[1:HEADER_BYTES]
    assert AESGCM(key).decrypt(nonce, blob[HEADER_BYTES:], b"ctx") == plaintext


def test_ciphertext_does_not_contain_the_plaintext(box: SecretBox) -> None:
    plaintext = b"very-recognisable-plaintext-" * 4
    blob = box.encrypt(plaintext)
    assert plaintext not in blob
    assert b"very-recognisable" not in blob


def test_every_encryption_uses_a_new_nonce(box: SecretBox) -> None:
    blobs = [box.encrypt(b"same message") for _ in range(50)]
    nonces = {blob[1:HEADER_BYTES] for blob in blobs}
    assert len(nonces) == 50
    assert len(set(blobs)) == 50
    assert all(box.decrypt(blob) == b"same message" for blob in blobs)


def test_wrong_key_is_refused(box: SecretBox) -> None:
    blob = box.encrypt(b"secret")
    other = SecretBox(os.urandom(KEY_BYTES))
    with pytest.raises(DecryptionError, match="wrong key or context"):
        other.decrypt(blob)


@pytest.mark.parametrize(
    ("encrypt_context", "decrypt_context"),
    [(b"vpn_config:42", b"vpn_config:43"), (b"vpn_config:42", b""), (b"", b"vpn_config:42")],
)
def test_wrong_context_is_refused(
    box: SecretBox, encrypt_context: bytes, decrypt_context: bytes
) -> None:
    blob = box.encrypt(b"secret", encrypt_context)
    with pytest.raises(DecryptionError):
        box.decrypt(blob, decrypt_context)


def test_every_tampered_byte_is_detected(box: SecretBox) -> None:
    blob = box.encrypt(b"tamper me", b"ctx")
    for index in range(len(blob)):
        tampered = bytearray(blob)
        tampered[index] ^= 0x01
        with pytest.raises(DecryptionError):
            box.decrypt(bytes(tampered), b"ctx")


@pytest.mark.parametrize("cut", [1, TAG_BYTES, TAG_BYTES + 5])
def test_truncated_blob_is_refused(box: SecretBox, cut: int) -> None:
    blob = box.encrypt(b"some secret value")
    with pytest.raises(DecryptionError):
        box.decrypt(blob[:-cut])


@pytest.mark.parametrize("length", [0, 1, HEADER_BYTES, HEADER_BYTES + TAG_BYTES - 1])
def test_too_short_blob_is_refused(box: SecretBox, length: int) -> None:
    blob = bytes([VERSION]) + bytes(length)
    with pytest.raises(DecryptionError, match="wrong length or version"):
        box.decrypt(blob[:length])


def test_appended_bytes_are_refused(box: SecretBox) -> None:
    blob = box.encrypt(b"secret")
    with pytest.raises(DecryptionError):
        box.decrypt(blob + b"\x00")


@pytest.mark.parametrize("version", [0, 2, 255])
def test_wrong_version_is_refused(box: SecretBox, version: int) -> None:
    blob = box.encrypt(b"secret")
    with pytest.raises(DecryptionError, match="version"):
        box.decrypt(bytes([version]) + blob[1:])


@pytest.mark.parametrize("length", [0, 16, 24, 31, 33, 64])
def test_key_length_is_checked(length: int) -> None:
    # 16 and 24 bytes would be valid AES-128/192 keys: the box insists on AES-256.
    with pytest.raises(ValueError, match="32 bytes"):
        SecretBox(b"k" * length)


def test_repr_hides_the_key() -> None:
    key = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)
    box = SecretBox(key)
    for text in (repr(box), str(box), f"{box!r}"):
        assert "key hidden" in text
        assert key.hex() not in text
        assert repr(key) not in text
        assert "00112233" not in text


def test_text_helpers_round_trip_unicode(box: SecretBox) -> None:
    blob = box.encrypt_text("Привет, мир 🌍", context="промо:1")
    assert isinstance(blob, bytes)
    assert box.decrypt_text(blob, context="промо:1") == "Привет, мир 🌍"


def test_text_helpers_are_utf8_over_the_byte_api(box: SecretBox) -> None:
    blob = box.encrypt_text("ключ", context="user:7")
    assert box.decrypt(blob, b"user:7") == "ключ".encode()
    raw_blob = box.encrypt("ключ".encode(), b"user:7")
    assert box.decrypt_text(raw_blob, context="user:7") == "ключ"


def test_text_helpers_check_the_context(box: SecretBox) -> None:
    blob = box.encrypt_text("token", context="provider:1")
    with pytest.raises(DecryptionError):
        box.decrypt_text(blob, context="provider:2")
    with pytest.raises(DecryptionError):
        box.decrypt_text(blob)
