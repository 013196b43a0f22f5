"""A transparency log's arithmetic: RFC 6962 / RFC 9162 Merkle trees and C2SP signed checkpoints.

Plain Python on ``hashlib`` and ``cryptography``, no Django, so the same code is easy to lift into
a member's own verifier (``scripts/verify_inclusion.py`` is a self-contained copy of the checks).

* Hashing (RFC 9162 §2.1.1): a leaf is SHA-256(0x00 ‖ entry), an interior node SHA-256(0x01 ‖
  left ‖ right); a tree of n > 1 leaves splits at k, the largest power of two below n.
* Proofs (§2.1.3, §2.1.4) are built from a callback that returns the hash of an aligned perfect
  subtree ``[lo, hi)``, so a caller can take large subtrees from storage and small ones from leaves.
* Checkpoints: C2SP ``tlog-checkpoint`` (origin, decimal size, base64 root) inside a C2SP
  ``signed-note`` with one Ed25519 signature line: "— <name> base64(key id ‖ signature)", where the
  key id is SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4].
"""

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256

PerfectHash = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof does not verify, or a proof was asked for sizes that do not exist."""


def leaf_hash(entry: bytes) -> bytes:
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactTree:
    """An append-only Merkle tree kept as the roots of its perfect subtrees (O(log n) memory).

    ``on_node(level, index, hash)`` is called for every perfect subtree completed by an append,
    level 0 being the leaf itself; the subtree covers leaves [index << level, (index + 1) << level).
    Only levels from ``min_level`` up are reported.
    """

    def __init__(
        self,
        size: int = 0,
        frontier: Iterable[bytes] = (),
        on_node: Callable[[int, int, bytes], None] | None = None,
        min_level: int = 0,
    ) -> None:
        self.size = size
        # Roots of the perfect subtrees, largest (leftmost) first; one per set bit of size.
        self.frontier = list(frontier)
        if len(self.frontier) != bin(size).count("1"):
            raise ValueError("frontier does not match the tree size")
        self.on_node = on_node
        self.min_level = min_level

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash."""
        on_node = self.on_node
        size = self.size
        frontier = self.frontier
        node = leaf
        level = 0
        report = on_node is not None
        if report and self.min_level == 0:
            on_node(0, size, node)
        # Each trailing 1 bit of the old size is a perfect subtree the new leaf completes.
        while size & 1:
            node = node_hash(frontier.pop(), node)
            size >>= 1
            level += 1
            if report and level >= self.min_level:
                on_node(level, size, node)
        frontier.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self.frontier:
            return EMPTY_ROOT
        node = self.frontier[-1]
        for left in reversed(self.frontier[:-1]):
            node = node_hash(left, node)
        return node


def mth(entries: Iterable[bytes]) -> bytes:
    """The Merkle tree hash of a list of entries (not leaf hashes)."""
    tree = CompactTree()
    for entry in entries:
        tree.append(leaf_hash(entry))
    return tree.root()


def range_hash(lo: int, hi: int, perfect: PerfectHash) -> bytes:
    """MTH(D[lo:hi]) for a range of the RFC's recursion, from the hashes of its perfect subtrees."""
    n = hi - lo
    if n & (n - 1) == 0:
        return perfect(lo, hi)
    k = _split(n)
    return node_hash(range_hash(lo, lo + k, perfect), range_hash(lo + k, hi, perfect))


def inclusion_path(index: int, size: int, perfect: PerfectHash) -> list[bytes]:
    """PATH(index, D[0:size]) (RFC 9162 §2.1.3.1), leaf-side first."""
    if not 0 <= index < size:
        raise ProofError("index outside the tree")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(range_hash(lo + k, hi, perfect))
            hi = lo + k
        else:
            path.append(range_hash(lo, lo + k, perfect))
            lo += k
    path.reverse()
    return path


def consistency_proof(size1: int, size2: int, perfect: PerfectHash) -> list[bytes]:
    """PROOF(size1, D[0:size2]) (RFC 9162 §2.1.4.1)."""
    if not 0 <= size1 <= size2:
        raise ProofError("the first size must not exceed the second")
    if size1 == 0 or size1 == size2:
        return []
    proof: list[bytes] = []
    lo, hi, m, complete = 0, size2, size1, True
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                proof.append(range_hash(lo, hi, perfect))
            break
        k = _split(n)
        if m <= k:
            proof.append(range_hash(lo + k, hi, perfect))
            hi = lo + k
        else:
            proof.append(range_hash(lo, lo + k, perfect))
            lo += k
            m -= k
            complete = False
    proof.reverse()
    return proof


def needed_subtrees(ranges: Callable[[PerfectHash], object]) -> set[tuple[int, int]]:
    """The perfect subtrees ``[lo, hi)`` a proof computation asks for (run once with a recorder)."""
    wanted: set[tuple[int, int]] = set()

    def record(lo: int, hi: int) -> bytes:
        wanted.add((lo, hi))
        return EMPTY_ROOT

    ranges(record)
    return wanted


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes:
    """The root an inclusion proof implies (RFC 9162 §2.1.3.2); ProofError when it is malformed."""
    if not 0 <= index < size:
        raise ProofError("index outside the tree")
    fn, sn = index, size - 1
    node = leaf
    for sibling in proof:
        if sn == 0:
            raise ProofError("proof is too long")
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            if not fn & 1:
                while (fn & 1) == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            node = node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof is too short")
    return node


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> None:
    """Raise ProofError unless ``proof`` shows leaf hash ``leaf`` at ``index`` in tree ``root``."""
    if len(leaf) != 32 or any(len(p) != 32 for p in proof):
        raise ProofError("hashes must be 32 bytes")
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError("the proof does not lead to the root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> None:
    """Raise ProofError unless ``proof`` shows tree ``root1`` is a prefix of tree ``root2``.

    RFC 9162 §2.1.4.2, checks in the reference verifier's order (transparency-dev/merkle).
    """
    if not 0 <= size1 <= size2:
        raise ProofError("the first size exceeds the second")
    if size1 == 0:
        # Nothing to be consistent with: a verifier that accepted it could be fed any root.
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if size1 == size2:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        if root1 != root2:
            raise ProofError("equal sizes with different roots")
        return
    if not proof:
        raise ProofError("empty proof")
    if any(len(p) != 32 for p in proof):
        raise ProofError("hashes must be 32 bytes")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: its root starts the path
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while (fn & 1) == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof is too short")
    if fr != root1:
        raise ProofError("the proof does not lead to the first root")
    if sr != root2:
        raise ProofError("the proof does not lead to the second root")


# --- C2SP signed checkpoints -------------------------------------------------------------------

_DASH = "\u2014"  # "—", the signature line's marker


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        """The checkpoint's note text (what is signed), ending in a newline."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def key_id(name: str, public: Ed25519PublicKey) -> bytes:
    return _sha256(name.encode() + b"\n\x01" + public.public_bytes_raw()).digest()[:4]


def verifier_key(name: str, public: Ed25519PublicKey) -> str:
    """The signed-note verifier key: "<name>+<hex key id>+base64(0x01 ‖ public key)"."""
    raw = b"\x01" + public.public_bytes_raw()
    return f"{name}+{key_id(name, public).hex()}+{base64.b64encode(raw).decode()}"


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> str:
    """A signed note: the text, a blank line, and one signature line by ``name``."""
    if not text.endswith("\n"):
        raise ValueError("a note's text ends with a newline")
    signature = key.sign(text.encode())
    blob = base64.b64encode(key_id(name, key.public_key()) + signature).decode()
    return f"{text}\n{_DASH} {name} {blob}\n"


def open_note(note: str, name: str, public: Ed25519PublicKey) -> str:
    """The text of a signed note, once a signature by ``name`` with ``public`` verifies.

    ProofError names what is wrong: not a note, no signature by that key, or a bad signature.
    """
    text, sep, signatures = note.rpartition("\n\n")
    if not sep:
        raise ProofError("not a signed note (no blank line before the signatures)")
    text += "\n"
    wanted = key_id(name, public)
    for line in signatures.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH or parts[1] != name:
            continue
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(blob) != 68 or blob[:4] != wanted:
            continue
        try:
            public.verify(blob[4:], text.encode())
        except InvalidSignature as exc:
            raise ProofError("the checkpoint's signature does not verify") from exc
        return text
    raise ProofError(f"the checkpoint carries no signature by the key of {name}")


def parse_checkpoint(text: str) -> Checkpoint:
    """A checkpoint from its note text; ProofError when the text is not one."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise ProofError("a checkpoint has an origin, a size and a root hash, one a line")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise ProofError("the checkpoint's size is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProofError("the checkpoint's root is not base64") from exc
    if len(root) != 32 or not origin:
        raise ProofError("the checkpoint's root is not a SHA-256 hash")
    return Checkpoint(origin=origin, size=int(size_text), root=root)
