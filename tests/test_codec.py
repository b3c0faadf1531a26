"""codec.py: message <-> stored JSON text. Pure: no server."""

from __future__ import annotations

import json
import math

import orjson
import pytest
from conftest import UNICODE_TEXT, big_message, sample_messages
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    message_to_dict,
    messages_from_dict,
)

from tidb_memory import DEFAULT_MAX_MESSAGE_BYTES, InvalidInputError, MessageTooLargeError
from tidb_memory.codec import decode, decode_many, encode, encode_batch

MESSAGES = sample_messages()


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_type_round_trips_equal(message: BaseMessage) -> None:
    decoded = decode(encode(message))
    assert type(decoded) is type(message)
    assert decoded == message
    assert decoded.model_dump() == message.model_dump()


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_stored_form_is_message_to_dict(message: BaseMessage) -> None:
    text = encode(message)
    assert json.loads(text) == message_to_dict(message)
    # ... so that langchain's own reader (and langchain-community's history) can read our rows
    (read,) = messages_from_dict([json.loads(text)])
    assert read == message
    assert type(read) is type(message)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_rows_written_by_langchain_decode(message: BaseMessage) -> None:
    # A row written by another tool: langchain's own serialisation, through the json module.
    assert decode(json.dumps(message_to_dict(message))) == message


def test_decoded_messages_are_ordinary_pydantic_models() -> None:
    original = MESSAGES[3]
    assert isinstance(original, AIMessage)
    decoded = decode(encode(original))
    assert isinstance(decoded, AIMessage)
    assert decoded.tool_calls == original.tool_calls
    assert decoded.usage_metadata == original.usage_metadata
    copy = decoded.model_copy(update={"content": "changed"})
    assert copy.content == "changed"
    assert decoded.content == original.content
    assert decode(encode(decoded)) == original
    assert decoded.model_dump_json() == original.model_dump_json()


def test_row_with_missing_fields_goes_through_validation() -> None:
    # An older writer that stored fewer fields: the validating constructor fills defaults.
    text = json.dumps({"type": "human", "data": {"content": "old row", "type": "human"}})
    decoded = decode(text)
    assert decoded == HumanMessage("old row")
    assert decoded.additional_kwargs == {}


def test_unicode_and_one_megabyte() -> None:
    message = HumanMessage(UNICODE_TEXT)
    assert decode(encode(message)).content == UNICODE_TEXT
    big = big_message()
    text = encode(big)
    assert len(text.encode()) > 1024 * 1024
    assert decode(text) == big


def test_decode_many_keeps_order() -> None:
    texts = [encode(m) for m in MESSAGES]
    assert decode_many(texts) == MESSAGES
    assert decode_many([t.encode() for t in texts]) == MESSAGES


@pytest.mark.parametrize(
    "text",
    ["{}", '{"type": "human"}', '{"type": "nope", "data": {}}', "[1, 2]", '"just a string"'],
)
def test_decode_rejects_what_is_not_a_stored_message(text: str) -> None:
    with pytest.raises(ValueError):
        decode(text)


@pytest.mark.parametrize("item", ["hi", 42, None, {"type": "human", "content": "hi"}, b"x"])
def test_encode_rejects_non_messages(item: object) -> None:
    with pytest.raises(InvalidInputError):
        encode(item)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (math.nan, "nan"),
        (math.inf, "inf"),
        (-math.inf, "inf"),
        ((1, 2), "tuple"),
        ({1, 2}, "set"),
        ({1: "int key"}, "key"),
        (2**64, "64 bits"),
        (-(2**63) - 1, "64 bits"),
        (b"bytes", "bytes"),
        ({"deep": [{"x": (1,)}]}, "tuple"),
    ],
)
def test_encode_refuses_values_json_would_change(value: object, why: str) -> None:
    message = HumanMessage("hi", additional_kwargs={"v": value})
    with pytest.raises(InvalidInputError) as info:
        encode(message)
    assert "HumanMessage" in str(info.value)


def test_integers_at_the_64_bit_edges_are_kept() -> None:
    message = HumanMessage("hi", additional_kwargs={"lo": -(2**63), "hi": 2**64 - 1})
    assert decode(encode(message)) == message


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        encode(HumanMessage("broken \ud800 surrogate"))


def test_size_limit_is_exact() -> None:
    message = HumanMessage("x" * 1000)
    size = len(encode(message).encode())
    assert encode(message, max_bytes=size)
    with pytest.raises(MessageTooLargeError) as info:
        encode(message, max_bytes=size - 1)
    assert isinstance(info.value, InvalidInputError)
    assert f"{size:,}" in str(info.value)
    assert DEFAULT_MAX_MESSAGE_BYTES == 6 * 1024 * 1024


@pytest.mark.parametrize(
    "batch", ["not a batch", b"bytes", HumanMessage("single"), 42, None, {"a": HumanMessage("x")}]
)
def test_encode_batch_rejects_non_sequences(batch: object) -> None:
    with pytest.raises(InvalidInputError):
        encode_batch(batch)  # type: ignore[arg-type]


def test_encode_batch_names_the_bad_item() -> None:
    batch = [HumanMessage("a"), AIMessage("b"), {"role": "user", "content": "c"}]
    with pytest.raises(InvalidInputError) as info:
        encode_batch(batch)  # type: ignore[list-item]
    assert "item 2" in str(info.value)
    assert "nothing was written" in str(info.value)


def test_encode_batch_checks_every_item_before_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    import tidb_memory.codec as codec

    encoded: list[BaseMessage] = []
    real = codec.encode

    def spy(message: BaseMessage, **kwargs: int) -> str:
        encoded.append(message)
        return real(message, **kwargs)

    monkeypatch.setattr(codec, "encode", spy)
    with pytest.raises(InvalidInputError):
        encode_batch([HumanMessage("a"), "b"])  # type: ignore[list-item]
    assert encoded == []
    assert encode_batch([]) == []
    assert len(encode_batch((HumanMessage("a"), AIMessage("b")))) == 2


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(content=st.text(), kwargs=st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_property_round_trip(content: str, kwargs: dict[str, object]) -> None:
    # Text without lone surrogates (hypothesis' st.text() excludes them by default).
    message = AIMessage(content, additional_kwargs=kwargs, id="p")
    text = encode(message)
    assert decode(text) == message
    assert orjson.loads(text) == message_to_dict(message)
