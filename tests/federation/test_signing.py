"""Ed25519 helpers of the engine: RFC 8032's known answer, fingerprints, refusals."""

import base64

import pytest

from projects.federation import signing

# RFC 8032, section 7.1, TEST 1 (the empty message).
SECRET = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
SIGNATURE = (
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def b64(hex_text: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_text)).decode()


def test_rfc8032_known_answer():
    key = signing.private_from_text(b64(SECRET))
    assert signing.public_to_text(key) == b64(PUBLIC)
    assert signing.sign(key, b"") == b64(SIGNATURE)
    assert signing.verify(signing.public_from_text(b64(PUBLIC)), b"", b64(SIGNATURE))


def test_fingerprint_is_the_first_half_of_the_public_keys_sha256():
    assert (
        signing.fingerprint(b64(PUBLIC))
        == (__import__("hashlib").sha256(bytes.fromhex(PUBLIC)).hexdigest()[:32])
    )


def test_verify_refuses_other_messages_keys_and_malformed_signatures():
    key = signing.generate()
    public = key.public_key()
    signature = signing.sign(key, b"round 1")
    assert signing.verify(public, b"round 1", signature)
    assert not signing.verify(public, b"round 2", signature)
    assert not signing.verify(signing.generate().public_key(), b"round 1", signature)
    for bad in (None, 5, "", "not base64!", "A" * 500, base64.b64encode(b"x" * 64).decode()):
        assert not signing.verify(public, b"round 1", bad)


@pytest.mark.parametrize("text", ["", "abc", base64.b64encode(b"x" * 31).decode(), "é" * 44])
def test_a_key_that_is_not_32_bytes_of_base64_is_refused(text):
    with pytest.raises(signing.BadKey):
        signing.public_from_text(text)
