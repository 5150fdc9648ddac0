"""The enrollment token (``vpnbot-enroll-v1.`` + base64url JSON): round trip, every refusal,
the stored secret hash and the CA fingerprint the agent pins."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets

import pytest

from controller.nodes.pki import CertificateAuthority, fingerprint
from proto.nodeapi.v1.enrollment import (
    PREFIX,
    EnrollmentToken,
    TokenError,
    hash_secret,
    pem_fingerprint,
)

FINGERPRINT = "ab" * 32
SECRET = "A" * 21 + "-_" + "z9" * 10  # 43 characters of the base64url alphabet


def token(**changes: str) -> EnrollmentToken:
    fields = {
        "url": "https://controller.example.org:8443",
        "node_id": "node-1",
        "ca_fingerprint": FINGERPRINT,
        "secret": SECRET,
    }
    fields.update(changes)
    return EnrollmentToken(**fields)


def raw_token(body: object) -> str:
    """A token with an arbitrary JSON body, bypassing ``encode``'s own fields."""
    data = json.dumps(body).encode()
    return PREFIX + base64.urlsafe_b64encode(data).decode().rstrip("=")


def good_body() -> dict[str, str]:
    return {"u": "https://c.example:8443", "n": "n1", "f": FINGERPRINT, "s": SECRET}


# --- round trip -------------------------------------------------------------------------------


def test_round_trip() -> None:
    original = token()
    text = original.encode()
    assert text.startswith(PREFIX)
    assert "=" not in text  # unpadded
    assert EnrollmentToken.decode(text) == original


def test_round_trip_with_a_real_secret_and_ipv6_url() -> None:
    secret = secrets.token_urlsafe(32)
    assert len(secret) == 43
    original = token(url="https://[2001:db8::1]:8443", node_id="0f3a-uuid-like", secret=secret)
    assert EnrollmentToken.decode(original.encode()) == original


def test_the_body_is_the_documented_compact_json() -> None:
    text = token().encode()
    raw = text[len(PREFIX) :]
    body = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    assert body == {
        "u": "https://controller.example.org:8443",
        "n": "node-1",
        "f": FINGERPRINT,
        "s": SECRET,
    }


def test_surrounding_whitespace_is_tolerated() -> None:
    original = token()
    assert EnrollmentToken.decode(f"  \n\t{original.encode()}\r\n ") == original


def test_decode_accepts_a_padded_body() -> None:
    # What a hand-made token or another base64 encoder may produce.
    data = json.dumps(good_body()).encode()
    padded = PREFIX + base64.urlsafe_b64encode(data).decode()
    assert EnrollmentToken.decode(padded).node_id == "n1"


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "vpnbot-enroll-v2." + "eyJ9",
        "VPNBOT-ENROLL-V1." + "eyJ9",
        "x" + PREFIX,
    ],
)
def test_wrong_prefix_is_refused(text: str) -> None:
    with pytest.raises(TokenError, match="not an enrollment token"):
        EnrollmentToken.decode(text)


def test_a_token_of_another_version_is_refused_even_with_a_valid_body() -> None:
    body = token().encode()[len(PREFIX) :]
    with pytest.raises(TokenError, match="not an enrollment token"):
        EnrollmentToken.decode("vpnbot-enroll-v2." + body)


@pytest.mark.parametrize(
    "body",
    [
        "",  # nothing after the prefix
        "!!!!",  # not base64 at all
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),  # not UTF-8
        base64.urlsafe_b64encode(b'{"u": "https://a"').decode(),  # truncated JSON
    ],
)
def test_damaged_body_is_refused(body: str) -> None:
    with pytest.raises(TokenError, match="damaged"):
        EnrollmentToken.decode(PREFIX + body)


def test_truncated_token_is_refused() -> None:
    text = token().encode()
    with pytest.raises(TokenError):
        EnrollmentToken.decode(text[: len(text) // 2])


def test_a_flipped_character_is_refused() -> None:
    text = token().encode()
    position = len(PREFIX) + 3  # inside the '{"u":' head
    flipped = text[:position] + ("A" if text[position] != "A" else "B") + text[position + 1 :]
    with pytest.raises(TokenError):
        EnrollmentToken.decode(flipped)


@pytest.mark.parametrize("body", [[1, 2], "a string", 42, None])
def test_non_object_json_is_refused(body: object) -> None:
    with pytest.raises(TokenError, match="damaged"):
        EnrollmentToken.decode(raw_token(body))


@pytest.mark.parametrize("missing", ["u", "n", "f", "s"])
def test_a_missing_key_is_refused(missing: str) -> None:
    body = good_body()
    del body[missing]
    with pytest.raises(TokenError, match="damaged"):
        EnrollmentToken.decode(raw_token(body))


@pytest.mark.parametrize("key", ["u", "n", "f", "s"])
def test_a_non_string_value_is_refused(key: str) -> None:
    body: dict[str, object] = dict(good_body())
    body[key] = 12345
    with pytest.raises(TokenError, match="damaged"):
        EnrollmentToken.decode(raw_token(body))


def test_the_good_body_helper_is_itself_accepted() -> None:
    # Guards the refusal tests above: they fail for the one reason they change.
    assert EnrollmentToken.decode(raw_token(good_body())).url == "https://c.example:8443"


@pytest.mark.parametrize(
    "url",
    [
        "http://controller.example.org:8443",
        "ftp://controller.example.org",
        "controller.example.org:8443",
        "https://",
        "https:///path-only",
        "",
    ],
)
def test_a_non_https_url_is_refused(url: str) -> None:
    with pytest.raises(TokenError, match="https://"):
        EnrollmentToken.decode(token(url=url).encode())


@pytest.mark.parametrize(
    "url",
    [
        "https://controller.example.org:abc",
        "https://controller.example.org:99999",
        "https://user:pw@controller.example.org",
        "https://controller.example.org?x=1",
    ],
)
def test_an_url_the_agent_cannot_dial_is_refused(url: str) -> None:
    # The agent dials urlsplit(url).hostname and .port; .port raises ValueError on a bad port,
    # which would surface as a traceback instead of a TokenError.
    with pytest.raises(TokenError):
        EnrollmentToken.decode(token(url=url).encode())


@pytest.mark.parametrize(
    "node_id", ["", "Node-1", "-node", "node-", "node_1", "node.1", "a" * 64, "nöde"]
)
def test_an_invalid_node_id_is_refused(node_id: str) -> None:
    with pytest.raises(TokenError, match="node id"):
        EnrollmentToken.decode(token(node_id=node_id).encode())


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ab" * 31,  # too short
        "ab" * 33,  # too long
        "AB" * 32,  # uppercase hex is not what fingerprint() produces
        "g" * 64,  # not hex
        ":".join(["ab"] * 32),  # the colon-separated openssl form
    ],
)
def test_a_malformed_fingerprint_is_refused(value: str) -> None:
    with pytest.raises(TokenError, match="fingerprint"):
        EnrollmentToken.decode(token(ca_fingerprint=value).encode())


@pytest.mark.parametrize(
    "value",
    [
        "",
        SECRET[:-1],  # 42 characters
        SECRET + "A",  # 44 characters
        SECRET[:-1] + "+",  # standard base64 alphabet
        SECRET[:-1] + "/",
        SECRET[:-1] + "=",
        SECRET[:-1] + " ",
    ],
)
def test_a_malformed_secret_is_refused(value: str) -> None:
    with pytest.raises(TokenError, match="secret"):
        EnrollmentToken.decode(token(secret=value).encode())


def test_token_error_is_a_value_error() -> None:
    # Callers (CLI, agent) may catch ValueError for all bad input.
    with pytest.raises(ValueError, match="not an enrollment token"):
        EnrollmentToken.decode("nope")


# --- the stored hash and the pinned fingerprint -----------------------------------------------


def test_hash_secret_is_sha256_hex() -> None:
    secret = secrets.token_urlsafe(32)
    digest = hash_secret(secret)
    assert digest == hashlib.sha256(secret.encode()).hexdigest()
    assert len(digest) == 64
    assert digest == digest.lower()
    assert secret not in digest


def test_hash_secret_differs_per_secret_and_is_stable() -> None:
    a, b = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    assert hash_secret(a) == hash_secret(a)
    assert hash_secret(a) != hash_secret(b)
    assert hash_secret(SECRET) != hash_secret(SECRET[:-1] + "B")


def test_pem_fingerprint_matches_the_ca_fingerprint() -> None:
    ca = CertificateAuthority.create()
    expected = fingerprint(ca.cert)
    assert pem_fingerprint(ca.cert_pem) == expected
    # ... and it is what a token may carry.
    assert EnrollmentToken.decode(token(ca_fingerprint=expected).encode()).ca_fingerprint == (
        expected
    )


def test_pem_fingerprint_takes_the_first_certificate_of_a_bundle() -> None:
    first, second = CertificateAuthority.create(), CertificateAuthority.create("other CA")
    bundle = b"leading text\n" + first.cert_pem + second.cert_pem
    assert pem_fingerprint(bundle) == fingerprint(first.cert)
    assert pem_fingerprint(second.cert_pem) == fingerprint(second.cert)
    assert fingerprint(first.cert) != fingerprint(second.cert)


def test_pem_fingerprint_tolerates_crlf_line_ends() -> None:
    ca = CertificateAuthority.create()
    assert pem_fingerprint(ca.cert_pem.replace(b"\n", b"\r\n")) == fingerprint(ca.cert)


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"no certificate here",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n",  # never ends
    ],
)
def test_pem_fingerprint_refuses_text_without_a_certificate(text: bytes) -> None:
    with pytest.raises(ValueError, match="no PEM certificate"):
        pem_fingerprint(text)
