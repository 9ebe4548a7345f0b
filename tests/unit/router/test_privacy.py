"""router.privacy: the secrets/PII detector, the privacy classifier and the request walk."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router import detector, privacy
from router.errors import InvalidRequest
from router.policy.schema import DETECTOR_KINDS, DetectorConfig, PrivacyConfig
from router.privacy import PrivacyDecision, classify, detect, iban_valid, luhn_valid
from router.types import ChatRequest

# ---------------------------------------------------------------------------------------------
# detect(): true positives and tricky negatives, kind by kind
# ---------------------------------------------------------------------------------------------

POSITIVES: dict[str, list[str]] = {
    "email": [
        "mail me at john.doe+tag@example.co.uk please",
        "Contact: a@b.io.",
        "<jane_oneil@sub.domain-x.org>",
        "git@github.com:org/repo.git",  # user@host syntax: counted, on purpose
    ],
    "phone": [
        "call +1 (415) 555-2671 now",
        "E.164: +14155552671",
        "UK office +44 20 7946 0958",
        "DE: +49 30 1234567",
        "tel:+33612345678",
        "US 415-555-2671",
        "US (415) 555-2671",
        "US 415.555.2671",
        "US 415 555 2671",
        "London 020 7946 0958",
        "Paris 06 12 34 56 78",
        "Berlin (030) 1234567",
        "mobile 0171-1234567",
    ],
    "card": [
        "visa 4111111111111111",
        "visa 4111 1111 1111 1111",
        "visa 4111-1111-1111-1111",
        "card 4111 1111 1111 1111 12/28 cvv 123",
        "amex 3782 822463 10005",
        "amex 378282246310005",
        "diners 3056 930902 5904",
        "mc 5555555555554444.",
        "order 12 then 4012 8888 8888 1881",
        "1234 4111 1111 1111 1111",  # a card after an unrelated leading group
        "19 digits 6304000000000000000",  # passes Luhn (Maestro-style length)
    ],
    "iban": [
        "IBAN DE89 3704 0044 0532 0130 00 thanks",
        "DE89370400440532013000",
        "GB29 NWBK 6016 1331 9268 19",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91ABNA0417164300",
        "be68 5390 0754 7034 (lower case)",
        "ref AB12 DE89 3704 0044 0532 0130 00",  # a non-IBAN start before the real one
        "NO9386011117947",
        "MT84 MALT 0110 0001 2345 MTLC AST0 01S",
    ],
    "aws_key": [
        "key AKIAIOSFODNN7EXAMPLE here",
        "session ASIAY34FZKBOKMUTVV7A",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        '{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}',
    ],
    "private_key": [
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",
        "-----BEGIN PRIVATE KEY-----",
        "-----BEGIN EC PRIVATE KEY-----",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----",
    ],
}

NEGATIVES: dict[str, list[str]] = {
    "email": [
        "@property\ndef x(self): ...",
        "npm i left-pad@1.3.0",
        "ping me @alice",
        "user@localhost",
        "a @ b matrix product",
        "docker pull img@sha256:abcdef",
    ],
    "phone": [
        "on 2024-01-15 at 10:30",
        "born 15.01.2024",
        "01/15/2024",
        "01-15-2024 10 items",
        "version 10.0.19041.1",
        "v1.2.3 and 2.10.0",
        "uuid 123e4567-e89b-12d3-a456-426614174000",
        "ts 1700000000123",
        "order 4155552671",  # bare digits: not a phone
        "ip 192.168.100.200",
        "x = 3 + 4",
        "+1 2",
        "+123",
        "score +1 234 56",  # 6 digits: too few for a phone
        "+1234567890123456789",  # 19 digits: more than E.164 allows
        "pi 3.14159 and 2.71828",
        "port 0:8080",
    ],
    "card": [
        "4111 1111 1111 1112",  # Luhn fails
        "4111111111111112",
        "0.30000000000000004",  # float fraction
        "1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0",  # table of small numbers
        "100 200 300 400 500 600",
        "41111111111111110000",  # 20 digits: too long
        "411111111111",  # 12 digits: too short
        "id abc4111111111111111",  # glued to a word
        "uuid 123e4567-e89b-12d3-a456-426614174000",
    ],
    "iban": [
        "DE88 3704 0044 0532 0130 00",  # wrong check digits
        "DE89 3704 0044 0532 0130 0",  # too short for DE
        "DE89370400440532013000X",  # runs on into more characters
        "ZZ89 3704 0044 0532 0130 00",  # not an IBAN country
        "sha de12f9a0b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8",
        "GB00 NWBK 6016 1331 9268 19",
    ],
    "aws_key": [
        "AKIAIOSFODNN7EXAMPL",  # 15 after the prefix
        "XAKIAIOSFODNN7EXAMPLE",  # inside a longer token
        "akiaiosfodnn7example",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",  # a secret-looking string, unnamed
        "aws_secret_access_key = short",
    ],
    "private_key": [
        "-----BEGIN PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        "BEGIN PRIVATE KEY",
    ],
}


@pytest.mark.parametrize(
    ("kind", "text"), [(k, t) for k, texts in POSITIVES.items() for t in texts]
)
def test_detects_each_kind(kind: str, text: str) -> None:
    assert detect(text, [kind]) == [kind]
    assert kind in detect(text, DETECTOR_KINDS)


@pytest.mark.parametrize(
    ("kind", "text"), [(k, t) for k, texts in NEGATIVES.items() for t in texts]
)
def test_tricky_negatives(kind: str, text: str) -> None:
    assert detect(text, [kind]) == []


def test_plain_prose_and_code_are_clean() -> None:
    text = (
        "Refactor the router: replace v2.3.1 with 2.4.0, run `pytest -k 'not slow'`, and keep "
        "latency under 250 ms at p99 for 1,000 req/s. Released 2024-06-01; see issue #1234.\n"
        "def f(x: float) -> float:\n    return x * 0.30000000000000004 + 1e-9\n"
    ) * 50
    assert detect(text, DETECTOR_KINDS) == []


def test_returns_kinds_in_canonical_order_each_once() -> None:
    text = (
        "-----BEGIN PRIVATE KEY----- a@b.com AKIAIOSFODNN7EXAMPLE 4111111111111111 "
        "DE89370400440532013000 +14155552671 c@d.org 5555555555554444"
    )
    assert detect(text, reversed(DETECTOR_KINDS)) == list(DETECTOR_KINDS)


def test_only_requested_kinds_are_reported() -> None:
    text = "a@b.com 4111111111111111"
    assert detect(text, ["card"]) == ["card"]
    assert detect(text, ["email"]) == ["email"]
    assert detect(text, []) == []
    assert detect("", DETECTOR_KINDS) == []


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown detector kinds"):
        detect("text", ["email", "ssn"])


def test_detector_table_matches_schema_kinds() -> None:
    assert tuple(detector._DETECTORS) == DETECTOR_KINDS


def test_non_ascii_digits_are_not_cards() -> None:
    arabic = "".join(chr(0x0660 + int(d)) for d in "4111111111111111")
    assert detect(arabic, ["card"]) == []
    assert luhn_valid(arabic) is False


@pytest.mark.parametrize(
    "text",
    [
        "1234 5678 " * 10_000,
        "1" * 100_000,
        "a@" * 50_000,
        "+1 2 " * 20_000,
        "AB12CD34" * 12_500,
        "DE12 CDEF " * 10_000,
        "(415) " * 20_000,
        "0" + " 00" * 30_000,
        "-----BEGIN " * 10_000,
        "secret_access_key=" * 5_000,
    ],
)
def test_pathological_inputs_finish(text: str) -> None:
    """Inputs shaped to provoke regex backtracking complete (pytest-timeout guards)."""
    found = detect(text, DETECTOR_KINDS)
    assert set(found) <= set(DETECTOR_KINDS)


# ---------------------------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("digits", "ok"),
    [
        ("4111111111111111", True),
        ("4111111111111112", False),
        ("79927398713", True),
        ("79927398710", False),
        ("0", True),
        ("", False),
        ("12a4", False),
    ],
)
def test_luhn(digits: str, ok: bool) -> None:
    assert luhn_valid(digits) is ok


@pytest.mark.parametrize(
    ("iban", "ok"),
    [
        ("DE89370400440532013000", True),
        ("de89370400440532013000", True),
        ("DE88370400440532013000", False),
        ("DE8937040044053201300", False),  # length
        ("XX89370400440532013000", False),  # country
        ("DE89370400440532013 00", False),  # not compact
        ("DEAA370400440532013000", False),  # check digits not digits
    ],
)
def test_iban_valid(iban: str, ok: bool) -> None:
    assert iban_valid(iban) is ok


# ---------------------------------------------------------------------------------------------
# hypothesis properties for the detector
# ---------------------------------------------------------------------------------------------


def _with_luhn_digit(body: str) -> str:
    for d in "0123456789":
        if luhn_valid(body + d):
            return body + d
    raise AssertionError("unreachable: one check digit always fits")


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    length = draw(st.integers(min_value=13, max_value=19))
    body = draw(st.text(alphabet="0123456789", min_size=length - 1, max_size=length - 1))
    number = _with_luhn_digit(body)
    sep = draw(st.sampled_from(["", " ", "-"]))
    if not sep:
        return number
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


@given(prefix=st.text(max_size=40), card=card_numbers(), suffix=st.text(max_size=40))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_any_valid_card_in_random_text_is_detected(prefix: str, card: str, suffix: str) -> None:
    assert "card" in detect(f"{prefix} {card} {suffix}", ["card"])


@given(
    text=st.text(max_size=300),
    inserts=st.lists(
        st.sampled_from([t for texts in POSITIVES.values() for t in texts]), max_size=3
    ),
)
@settings(max_examples=200)
def test_detector_returns_only_kind_names(text: str, inserts: list[str]) -> None:
    full = " ".join([text, *inserts])
    found = detect(full, DETECTOR_KINDS)
    assert set(found) <= set(DETECTOR_KINDS)
    assert len(found) == len(set(found))
    assert found == [k for k in DETECTOR_KINDS if k in found]


# ---------------------------------------------------------------------------------------------
# classify()
# ---------------------------------------------------------------------------------------------


def _req(content: str = "hello", metadata: dict[str, str] | None = None, **kw: Any) -> ChatRequest:
    body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": content}]}
    return ChatRequest.model_validate({**body, "metadata": metadata, **kw})


CFG = PrivacyConfig()
IBAN_DE = "DE89 3704 0044 0532 0130 00"


def _classify(
    request: ChatRequest | None = None,
    *,
    header: str | None = None,
    key_default: str | None = None,
    alias_private: bool = False,
    config: PrivacyConfig = CFG,
) -> PrivacyDecision:
    return classify(
        request or _req(),
        header=header,
        key_default=key_default,
        alias_private=alias_private,
        config=config,
    )


def test_standard_by_default() -> None:
    d = _classify()
    assert d == PrivacyDecision("standard", ("policy_default",))
    assert not d.private


@pytest.mark.parametrize(
    ("kwargs", "source"),
    [
        ({"header": "private"}, "header"),
        ({"request": _req(metadata={"privacy": "private"})}, "metadata"),
        ({"key_default": "private"}, "api_key"),
        ({"alias_private": True}, "model_alias"),
        ({"request": _req("write to bob@example.com")}, "detector:email"),
        ({"config": PrivacyConfig(default_class="private")}, "policy_default"),
    ],
)
def test_each_source_alone_makes_private(kwargs: dict[str, Any], source: str) -> None:
    d = _classify(**kwargs)
    assert d.cls == "private" and d.private
    assert d.sources == (source,)


def test_header_value_is_case_insensitive() -> None:
    assert _classify(header="PRIVATE").cls == "private"
    assert _classify(header="  Private ").cls == "private"
    assert _classify(header="Standard").cls == "standard"


def test_all_private_sources_are_listed_in_order() -> None:
    req = _req("card 4111 1111 1111 1111, mail a@b.co", metadata={"privacy": "private"})
    d = _classify(
        req,
        header="private",
        key_default="private",
        alias_private=True,
        config=PrivacyConfig(default_class="private"),
    )
    assert d.sources == (
        "header",
        "metadata",
        "api_key",
        "model_alias",
        "detector:email",
        "detector:card",
        "policy_default",
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"header": "standard", "key_default": "private"},
        {"header": "standard", "alias_private": True},
        {"header": "standard", "request": _req("AKIAIOSFODNN7EXAMPLE")},
        {"header": "standard", "config": PrivacyConfig(default_class="private")},
        {"request": _req(metadata={"privacy": "standard"}), "header": "private"},
        {"request": _req(metadata={"privacy": "standard"}), "key_default": "private"},
        {"key_default": "standard", "header": "private"},
        {
            "header": "standard",
            "key_default": "standard",
            "request": _req("+44 20 7946 0958", metadata={"privacy": "standard"}),
        },
    ],
)
def test_nothing_makes_a_private_request_standard(kwargs: dict[str, Any]) -> None:
    d = _classify(**kwargs)
    assert d.cls == "private"
    assert "header" not in d.sources or kwargs.get("header") == "private"


def test_standard_lists_explicit_standard_sources() -> None:
    d = _classify(_req(metadata={"privacy": "standard"}), header="standard", key_default="standard")
    assert d == PrivacyDecision("standard", ("header", "metadata", "api_key", "policy_default"))


@pytest.mark.parametrize(
    "value", ["secret", "", "  ", "privat", "1", "private,bogus", "bogus, private", "private,", ","]
)
def test_invalid_header_is_400_naming_it(value: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        _classify(header=value)
    assert exc.value.status == 400
    assert exc.value.param == "X-Privacy"
    assert exc.value.body()["error"]["param"] == "X-Privacy"


@pytest.mark.parametrize("value", ["confidential", "", "yes"])
def test_invalid_metadata_privacy_is_400_naming_it(value: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        _classify(_req(metadata={"privacy": value}))
    assert exc.value.param == "metadata.privacy"


def test_invalid_values_are_rejected_even_when_private_anyway() -> None:
    with pytest.raises(InvalidRequest):
        _classify(header="bogus", key_default="private")


def test_other_metadata_keys_are_ignored() -> None:
    assert _classify(_req(metadata={"team": "private"})).cls == "standard"


def test_invalid_key_default_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        _classify(key_default="secret")


def test_detector_disabled_or_narrowed() -> None:
    req = _req("mail a@b.com card 4111111111111111")
    off = PrivacyConfig(detector=DetectorConfig(enabled=False))
    assert _classify(req, config=off).cls == "standard"
    cards_only = PrivacyConfig(detector=DetectorConfig(kinds=["card"]))
    assert _classify(req, config=cards_only).sources == ("detector:card",)
    none = PrivacyConfig(detector=DetectorConfig(kinds=[]))
    assert _classify(req, config=none).cls == "standard"


def test_detector_scans_every_message_reasoning_and_tool_arguments() -> None:
    base = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    reasoning = [{"role": "assistant", "content": "ok", "reasoning_content": "x@y.com"}]
    call = {"id": "call_1", "function": {"name": "pay", "arguments": {"iban": IBAN_DE}}}
    tool_args = [{"role": "assistant", "tool_calls": [call]}]
    tool_result = [{"role": "tool", "tool_call_id": "call_1", "content": "AKIAIOSFODNN7EXAMPLE"}]
    cases: list[tuple[list[dict[str, Any]], str]] = [
        (reasoning, "detector:email"),
        (tool_args, "detector:iban"),
        (tool_result, "detector:aws_key"),
    ]
    for extra, source in cases:
        req = ChatRequest.model_validate({"model": "m", "messages": [*base, *extra]})
        assert _classify(req).sources == (source,), source


def test_detector_does_not_join_messages_into_false_matches() -> None:
    req = ChatRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "numbers 4111 1111"},
                {"role": "user", "content": "1111 1111 end"},
            ],
        }
    )
    assert _classify(req).cls == "standard"


def test_decision_is_frozen() -> None:
    d = _classify()
    with pytest.raises(AttributeError):
        d.cls = "private"  # type: ignore[misc]


# (a) any combination of sources with at least one private gives private, with exactly those
# sources; none private gives standard.
_CLASS_SPELLINGS = st.sampled_from(["private", "PRIVATE", " Private", "standard", "Standard "])


@given(
    header=st.none() | _CLASS_SPELLINGS,
    meta=st.none() | _CLASS_SPELLINGS,
    key_default=st.sampled_from([None, "private", "standard"]),
    alias_private=st.booleans(),
    default_class=st.sampled_from(["private", "standard"]),
    with_email=st.booleans(),
    detector_on=st.booleans(),
)
def test_any_private_source_makes_private(
    header: str | None,
    meta: str | None,
    key_default: str | None,
    alias_private: bool,
    default_class: str,
    with_email: bool,
    detector_on: bool,
) -> None:
    content = "mail ann@example.org" if with_email else "nothing to see"
    req = _req(content, metadata=None if meta is None else {"privacy": meta})
    config = PrivacyConfig.model_validate(
        {"default_class": default_class, "detector": {"enabled": detector_on}}
    )
    expected = [
        src
        for src, says_private in [
            ("header", header is not None and header.strip().lower() == "private"),
            ("metadata", meta is not None and meta.strip().lower() == "private"),
            ("api_key", key_default == "private"),
            ("model_alias", alias_private),
            ("detector:email", with_email and detector_on),
            ("policy_default", default_class == "private"),
        ]
        if says_private
    ]
    d = classify(
        req, header=header, key_default=key_default, alias_private=alias_private, config=config
    )
    assert d.cls == ("private" if expected else "standard")
    if expected:
        assert d.sources == tuple(expected)
    else:
        assert d.sources[-1] == "policy_default"


# ---------------------------------------------------------------------------------------------
# X-Privacy as a list: repeated headers arrive joined with ", "; the most private token wins
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "cls"),
    [
        ("private, standard", "private"),
        ("standard,private", "private"),
        (" PRIVATE ", "private"),
        ("standard , Private", "private"),
        ("standard, standard", "standard"),
        ("Standard,STANDARD ", "standard"),
    ],
)
def test_header_list_resolves_to_most_private(value: str, cls: str) -> None:
    d = _classify(header=value)
    assert d.cls == cls
    assert d.sources[0] == "header"


def test_header_list_with_a_private_token_is_private_against_standard_markers() -> None:
    req = _req(metadata={"privacy": "standard"})
    d = _classify(req, header="standard, private", key_default="standard")
    assert d == PrivacyDecision("private", ("header",))


def test_invalid_token_next_to_private_is_400() -> None:
    with pytest.raises(InvalidRequest) as exc:
        _classify(header="private,bogus")
    assert exc.value.param == "X-Privacy"


@pytest.mark.parametrize("key", ["Privacy", " privacy", "PRIVACY "])
def test_every_spelling_of_metadata_privacy_counts(key: str) -> None:
    d = _classify(_req(metadata={"privacy": "standard", key: "private"}))
    assert d == PrivacyDecision("private", ("metadata",))
    with pytest.raises(InvalidRequest):
        _classify(_req(metadata={key: "bogus"}))


# ---------------------------------------------------------------------------------------------
# The generic walk: a secret in any string the backend would receive is found
# ---------------------------------------------------------------------------------------------

EMAIL = "ann@example.org"
AWS = "AKIAIOSFODNN7EXAMPLE"  # also a valid tool / function name and call id
CARD = "4111111111111111"


def _rich_body() -> dict[str, Any]:
    params = {
        "type": "object",
        "description": "where",
        "properties": {
            "city": {"type": "string", "description": "the city", "enum": ["Paris", "Oslo"],
                     "default": "Paris"},
            "code": {"type": "integer", "enum": [1, 2]},
        },
        "required": ["city"],
    }
    call = {"id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
    return {
        "model": "gpt-oss-20b",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather?", "name": "alice"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": [{"type": "function", "function": {"name": "weather",
                                                   "description": "get the weather",
                                                   "parameters": params}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": {"type": "object", "description": "the answer",
                                         "properties": {"text": {"type": "string"}}}}},
        "stop": ["END"],
        "metadata": {"team": "blue"},
        "user": "user-1",
    }


def _props(b: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = b["tools"][0]["function"]["parameters"]["properties"]
    return props


FIELD_SECRETS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "message content": (lambda b: b["messages"][1].update(content=f"to {EMAIL}"), "email"),
    "content part": (lambda b: b["messages"][1].update(
        content=[{"type": "text", "text": f"card {CARD}"}]), "card"),
    "message name": (lambda b: b["messages"][1].update(name=AWS), "aws_key"),
    "tool description": (lambda b: b["tools"][0]["function"].update(
        description=f"mail {EMAIL}"), "email"),
    "tool function name": (lambda b: b["tools"][0]["function"].update(name=AWS), "aws_key"),
    "parameter description": (lambda b: _props(b)["city"].update(
        description=f"ask {EMAIL}"), "email"),
    "parameter enum": (lambda b: _props(b)["city"]["enum"].append(EMAIL), "email"),
    "parameter enum integer": (lambda b: _props(b)["code"]["enum"].append(int(CARD)), "card"),
    "parameter default": (lambda b: _props(b)["city"].update(default=EMAIL), "email"),
    "parameter name (a dict key)": (lambda b: _props(b).update({AWS: {"type": "string"}}),
                                    "aws_key"),
    "required list": (lambda b: b["tools"][0]["function"]["parameters"]["required"].append(AWS),
                      "aws_key"),
    "stop list": (lambda b: b["stop"].append(EMAIL), "email"),
    "stop string": (lambda b: b.update(stop=EMAIL), "email"),
    "tool-call id": (lambda b: b["messages"][2]["tool_calls"][0].update(id=AWS), "aws_key"),
    "tool-call function name": (lambda b: b["messages"][2]["tool_calls"][0]["function"].update(
        name=AWS), "aws_key"),
    "tool-call arguments": (lambda b: b["messages"][2]["tool_calls"][0]["function"].update(
        arguments={"to": EMAIL}), "email"),
    "tool_call_id": (lambda b: b["messages"][3].update(tool_call_id=AWS), "aws_key"),
    "tool_choice function name": (lambda b: b["tool_choice"]["function"].update(name=AWS),
                                  "aws_key"),
    "response_format schema description": (
        lambda b: b["response_format"]["json_schema"]["schema"].update(description=EMAIL),
        "email"),
    "response_format schema name": (
        lambda b: b["response_format"]["json_schema"].update(name=AWS), "aws_key"),
    "metadata value": (lambda b: b["metadata"].update(team=EMAIL), "email"),
    "metadata key": (lambda b: b["metadata"].update({AWS: "x"}), "aws_key"),
    "user": (lambda b: b.update(user=EMAIL), "email"),
    "reasoning": (lambda b: b["messages"][2].update(reasoning_content=f"I saw {EMAIL}"), "email"),
}


def test_rich_body_without_secrets_is_standard() -> None:
    assert _classify(ChatRequest.model_validate(_rich_body())).cls == "standard"


@pytest.mark.parametrize("field", sorted(FIELD_SECRETS))
def test_a_secret_in_any_field_makes_private(field: str) -> None:
    mutate, kind = FIELD_SECRETS[field]
    body = _rich_body()
    mutate(body)
    d = _classify(ChatRequest.model_validate(body))
    assert d.cls == "private", field
    assert f"detector:{kind}" in d.sources, (field, d.sources)


def test_typed_numbers_are_not_scanned_but_free_form_ones_are() -> None:
    # A 16-digit Luhn-valid seed is the client's knob, not content; the same number inside a
    # tool schema is text a backend receives.
    req = ChatRequest.model_validate({**_rich_body(), "seed": int(CARD)})
    assert CARD not in privacy.request_texts(req)
    assert _classify(req).cls == "standard"


def test_walk_covers_every_string_value_of_the_dumped_request() -> None:
    # What backends build their bodies from: every string value of the dump is scanned.
    req = ChatRequest.model_validate(_rich_body())
    values: set[str] = set()
    stack: list[Any] = [req.model_dump()]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            values.add(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    assert "call_1" in values and "the city" in values
    # `model` alone is left out: no backend receives it (each sends its own model id).
    assert values - {"", req.model} <= set(privacy.request_texts(req))
    assert req.model not in privacy.request_texts(req)


def test_walk_survives_hostile_nesting_and_stays_linear() -> None:
    req = ChatRequest.model_validate(_rich_body())
    deep: dict[str, Any] = {"description": EMAIL}
    for _ in range(100_000):  # far past Python's recursion limit
        deep = {"type": "object", "properties": {"p": deep}}
    assert req.tools is not None
    req.tools[0].function.parameters = deep  # assignment is not validated: no recursion there
    texts = privacy.request_texts(req)
    assert EMAIL in texts
    assert _classify(req).sources == ("detector:email",)


def test_walk_separates_texts_so_they_cannot_join_into_a_match() -> None:
    body = _rich_body()
    body["stop"] = ["4111 1111", "1111 1111"]
    assert _classify(ChatRequest.model_validate(body)).cls == "standard"
