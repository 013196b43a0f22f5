"""The round's contract: one canonical form per message, pinned bytes, strict parsing."""

import base64
import copy
import json

import pytest

from projects.federation import signing
from projects.federation.families import FAMILY_NAMES
from projects.federation.protocol import (
    DatasetRef,
    Envelope,
    Heartbeat,
    LearningSpec,
    ProtocolError,
    RoundTask,
    SiteError,
    SiteMessage,
    SiteReply,
    canonical,
    open_wire,
    safe_detail,
    sha256_hex,
)
from projects.federation.strategies import STRATEGIES

SEED = base64.b64encode(bytes(range(32))).decode()  # a fixed key: signatures are deterministic
SPEC = LearningSpec(
    features=("age", "dose"),
    label="outcome",
    classes=("no", "yes"),
    feature_ranges=((0.0, 100.0), (0.0, 10.0)),
    task="classification",
    metric="roc_auc",
)
TASK = RoundTask(
    family="logistic_regression",
    family_options={"l2": 0.003},
    spec=SPEC,
    epochs=5,
    batch_size=32,
    learning_rate=0.5,
    proximal_mu=0.0,
    seed=42,
    round_number=3,
    site="taipei-north-hospital",
)
MESSAGE = SiteMessage(
    kind="train",
    run=7,
    launched="2026-12-03T05:00:00.123456+00:00",
    round=3,
    site="taipei-north-hospital",
    ticket=99,
    nonce="00112233445566778899aabbccddeeff",
    deadline=1796274000,
    dataset=DatasetRef(site_key="tumours.csv", sha256="ab" * 32, rows=151),
    task=TASK,
    params_sha256="cd" * 32,
    max_update_bytes=1_000_000,
)
REPLY = SiteReply.answering(
    MESSAGE,
    "0f" * 16,
    update_sha256="ef" * 32,
    sample_count=121,
    metrics={"accuracy": 0.9, "validation_rows": 30.0},
    global_metrics={"accuracy": 0.85, "validation_rows": 30.0},
    timings={"compute": 0.02},
)

# The bytes that get signed, pinned: a change here breaks every deployed site worker.
MESSAGE_BYTES = (
    b'{"candidates":[],"dataset":{"rows":151,"sha256":"' + b"ab" * 32 + b'",'
    b'"site_key":"tumours.csv"},'
    b'"deadline":1796274000,"domain":"fl-portal/site-task/v1","kind":"train",'
    b'"launched":"2026-12-03T05:00:00.123456+00:00","max_update_bytes":1000000,'
    b'"nonce":"00112233445566778899aabbccddeeff","params_sha256":"' + b"cd" * 32 + b'",'
    b'"protocol":1,"round":3,"run":7,"site":"taipei-north-hospital","task":{"batch_size":32,'
    b'"epochs":5,"family":"logistic_regression","family_options":{"l2":0.003},'
    b'"learning_rate":0.5,"proximal_mu":0.0,"round_number":3,"seed":42,'
    b'"site":"taipei-north-hospital","spec":{"classes":["no","yes"],'
    b'"feature_ranges":[[0.0,100.0],[0.0,10.0]],"features":["age","dose"],"label":"outcome",'
    b'"metric":"roc_auc","task":"classification"},"validation_share":0.2},"ticket":99}'
)
REPLY_SHA256 = "205e70912edd28ec783195d6a04f6e07369dd33e8fbc2e65db461446bdedf7ab"


def test_canonical_form_sorts_keys_and_has_no_spaces():
    assert canonical({"b": 1, "a": [1.5, "é"]}) == b'{"a":[1.5,"\\u00e9"],"b":1}'
    with pytest.raises(ValueError):
        canonical({"a": float("nan")})


def test_the_signed_bytes_are_pinned():
    assert MESSAGE.canonical() == MESSAGE_BYTES
    assert sha256_hex(REPLY.canonical()) == REPLY_SHA256
    # Ed25519 is deterministic: the same key signs the same bytes the same way.
    key = signing.private_from_text(SEED)
    assert Envelope.seal(MESSAGE, key).signature == signing.sign(key, MESSAGE_BYTES)


def test_each_message_survives_its_json_form():
    for value in (MESSAGE, REPLY, Heartbeat(site="x", kid="k", sent_at=1.5)):
        again = type(value).from_json(json.loads(json.dumps(value.to_json())))
        assert again == value
        assert again.canonical() == value.canonical()
    assert RoundTask.from_json(TASK.to_json()) == TASK
    assert LearningSpec.from_json(SPEC.to_json()) == SPEC


def test_a_signature_covers_the_body_and_the_attachment_is_bound_by_hash():
    key = signing.private_from_text(SEED)
    envelope = Envelope.seal(MESSAGE, key, b"params")
    wire = json.loads(json.dumps(envelope.to_wire()))
    opened = open_wire(wire, SiteMessage)
    assert opened.signed_by(key.public_key())
    assert not opened.signed_by(signing.generate().public_key())
    edited = copy.deepcopy(wire)
    edited["body"]["round"] = 4
    assert not open_wire(edited, SiteMessage).signed_by(key.public_key())
    with pytest.raises(ProtocolError) as mismatch:
        opened.attachment_bytes(sha256_hex(b"other"), limit=100)
    assert mismatch.value.code == "attachment_mismatch"
    assert opened.attachment_bytes(sha256_hex(b"params"), limit=100) == b"params"
    with pytest.raises(ProtocolError):
        opened.attachment_bytes(sha256_hex(b"params"), limit=3)


def test_a_message_of_one_kind_is_not_another():
    wire = Envelope.seal(MESSAGE, signing.private_from_text(SEED)).to_wire()
    with pytest.raises(ProtocolError):
        open_wire(wire, SiteReply)


def _broken(path: tuple, value: object) -> dict:
    data = copy.deepcopy(REPLY.to_json())
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("sample_count",), 2**31),
        (("sample_count",), -1),
        (("sample_count",), True),
        (("sample_count",), 1.5),
        (("ticket",), "99"),
        (("round",), -1),
        (("site",), "a" * 500),
        (("site",), "a\x00b"),
        (("metrics",), {"accuracy": "high"}),
        (("metrics",), {f"m{i}": 1.0 for i in range(40)}),
        (("update_sha256",), "not a hash"),
        (("protocol",), 99),
        (("domain",), "fl-portal/site-task/v1"),
    ],
)
def test_a_reply_that_breaks_the_contract_is_refused(path, value):
    with pytest.raises(ProtocolError):
        SiteReply.from_json(_broken(path, value))


def test_a_missing_field_is_named():
    data = REPLY.to_json()
    del data["nonce"]
    with pytest.raises(ProtocolError) as refused:
        SiteReply.from_json(data)
    assert refused.value.detail == {"field": "nonce", "problem": "missing"}


def test_a_refusal_never_carries_a_value_from_the_data_file():
    detail = {"column": "age", "line": 4, "value": "Mrs Chen, 1961-04-02", "label": "x"}
    assert safe_detail(detail) == {"column": "age", "line": 4}
    error = SiteError.from_json({"code": "not_numeric", "detail": detail})
    assert "value" not in error.detail and "label" not in error.detail


def test_the_databases_choices_are_the_engines():
    from projects.models import ModelFamily, Strategy

    assert set(ModelFamily.values) == set(FAMILY_NAMES)
    assert set(Strategy.values) == set(STRATEGIES)


def test_a_learning_spec_states_its_scaling_only_when_it_is_not_the_default():
    from projects.federation.protocol import LearningSpec, ProtocolError

    plain = LearningSpec(
        features=("a", "b"),
        label="y",
        classes=None,
        feature_ranges=((0, 1), (0, 2)),
        task="regression",
    )
    assert "scaling" not in plain.to_json() and "feature_stats" not in plain.to_json()
    standardised = LearningSpec(
        features=("a", "b"),
        label="y",
        classes=None,
        feature_ranges=((0, 1), (0, 2)),
        task="regression",
        scaling="standardise",
        feature_stats=((0.5, 0.25), (1.0, 0.0)),
    )
    data = standardised.to_json()
    assert data["scaling"] == "standardise"
    assert data["feature_stats"] == [[0.5, 0.25], [1.0, 0.0]]
    assert LearningSpec.from_json(data) == standardised
    assert LearningSpec.from_json(plain.to_json()) == plain
    for bad in (
        {**data, "scaling": "zscore"},
        {**data, "feature_stats": [[0.5, 0.25]]},  # one pair per feature
        {**data, "feature_stats": [[0.5, -1.0], [1.0, 0.0]]},  # a negative deviation
        {**plain.to_json(), "scaling": "none", "feature_stats": [[0.0, 1.0], [0.0, 1.0]]},
    ):
        with pytest.raises(ProtocolError):
            LearningSpec.from_json(bad)
