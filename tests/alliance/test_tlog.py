"""The transparency log's arithmetic against public known answers (no database).

The RFC 6962 proof vectors are the 196 files of transparency-dev/merkle's testdata, kept read-only
outside the project (``RFC6962_TESTDATA``, or ``shared/testdata/rfc6962`` in a parent folder).
"""

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from alliance import tlog

LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _testdata() -> Path | None:
    if os.environ.get("RFC6962_TESTDATA"):
        return Path(os.environ["RFC6962_TESTDATA"])
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "testdata" / "rfc6962"
        if candidate.is_dir():
            return candidate
    return None


TESTDATA = _testdata()


def _cases(kind: str) -> list[Path]:
    return sorted((TESTDATA / kind).rglob("*.json")) if TESTDATA else []


def _b64(items: list[str] | None) -> list[bytes]:
    return [base64.b64decode(item) for item in items or []]


def _perfect_from(leaves: list[bytes]):
    hashes = [tlog.leaf_hash(entry) for entry in leaves]

    def perfect(lo: int, hi: int) -> bytes:
        tree = tlog.CompactTree()
        for leaf in hashes[lo:hi]:
            tree.append(leaf)
        return tree.root()

    return perfect


def test_known_roots_and_hashes():
    for size, root in enumerate(ROOTS):
        assert tlog.mth(LEAVES[:size]).hex() == root
    assert tlog.leaf_hash(b"L123456").hex().startswith("395aa064")
    assert tlog.node_hash(b"N123", b"N456").hex().startswith("aa217fe8")


def test_compact_tree_matches_the_recursive_definition_for_every_size():
    entries = [i.to_bytes(2, "big") for i in range(300)]
    perfect = _perfect_from(entries)
    for size in range(1, 301):
        assert tlog.mth(entries[:size]) == tlog.range_hash(0, size, perfect)


def test_generated_proofs_verify_for_all_small_trees():
    perfect = _perfect_from(LEAVES)
    for n in range(1, 9):
        root = bytes.fromhex(ROOTS[n])
        for m in range(n):
            path = tlog.inclusion_path(m, n, perfect)
            tlog.verify_inclusion(m, n, tlog.leaf_hash(LEAVES[m]), path, root)
            with pytest.raises(tlog.ProofError):
                tlog.verify_inclusion(m ^ 1, n, tlog.leaf_hash(LEAVES[m]), path, root)
        for m in range(1, n + 1):
            proof = tlog.consistency_proof(m, n, perfect)
            tlog.verify_consistency(m, n, bytes.fromhex(ROOTS[m]), root, proof)


@pytest.mark.skipif(TESTDATA is None, reason="RFC 6962 vectors not found (set RFC6962_TESTDATA)")
def test_all_196_rfc6962_vectors():
    inclusion, consistency = _cases("inclusion"), _cases("consistency")
    assert (len(inclusion), len(consistency)) == (98, 98)
    failures = []
    for path in inclusion:
        case = json.loads(path.read_text())
        try:
            tlog.verify_inclusion(
                case["leafIdx"],
                case["treeSize"],
                base64.b64decode(case["leafHash"] or ""),
                _b64(case["proof"]),
                base64.b64decode(case["root"] or ""),
            )
            rejected = False
        except tlog.ProofError:
            rejected = True
        if rejected != case["wantErr"]:
            failures.append(f"{path.relative_to(TESTDATA)}: {case['desc']}")
    for path in consistency:
        case = json.loads(path.read_text())
        try:
            tlog.verify_consistency(
                case["size1"],
                case["size2"],
                base64.b64decode(case["root1"] or ""),
                base64.b64decode(case["root2"] or ""),
                _b64(case["proof"]),
            )
            rejected = False
        except tlog.ProofError:
            rejected = True
        if rejected != case["wantErr"]:
            failures.append(f"{path.relative_to(TESTDATA)}: {case['desc']}")
    assert failures == []


def test_signed_note_known_answer():
    seed = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
    key = Ed25519PrivateKey.from_private_bytes(seed)
    text = (
        "If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n"
    )
    note = tlog.sign_note(text, "PeterNeumann", key)
    assert note.endswith(
        "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKv"
        "qfqdngotpRZb6KE6RyyBwJnAM=\n"
    )
    assert (
        tlog.verifier_key("PeterNeumann", key.public_key())
        == "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    )
    assert tlog.open_note(note, "PeterNeumann", key.public_key()) == text
    forged = note.replace("answer", "Answer")
    with pytest.raises(tlog.ProofError):
        tlog.open_note(forged, "PeterNeumann", key.public_key())


def test_checkpoint_round_trips():
    checkpoint = tlog.Checkpoint("example.org/log", 8, bytes.fromhex(ROOTS[8]))
    assert tlog.parse_checkpoint(checkpoint.body()) == checkpoint
    for bad in ("", "o\n8\n", "o\n08\nAAAA\n", "o\nx\nAAAA\n", "o\n8\nnot base64!\n"):
        with pytest.raises(tlog.ProofError):
            tlog.parse_checkpoint(bad)
