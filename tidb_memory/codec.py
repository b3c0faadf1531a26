"""Message encoding: LangChain message <-> the JSON text stored in a row.

The stored form is exactly ``langchain_core.messages.message_to_dict(message)``, i.e.
``{"type": ..., "data": message.model_dump()}``, so rows written by tidb-memory can be read by
``messages_from_dict`` and vice versa. orjson does the JSON work.

Fidelity is exact: ``decode(encode(m)) == m`` for every message type. To keep that promise the
encoder refuses what JSON would silently change (tuples, sets, non-string keys, NaN, infinities,
integers outside 64 bits, lone surrogates) with :class:`~tidb_memory.InvalidInputError`, instead of
storing something that reads back different.

Decoding skips pydantic's second validation when the row has exactly the field set our encoder
writes: the row was validated when the message was built, and its dump is the message's state.
Anything else (rows written by other tools, older langchain versions) goes through the ordinary,
validating constructor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
)

from .errors import InvalidInputError, MessageTooLargeError

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "decode",
    "decode_json",
    "decode_many",
    "encode",
    "encode_batch",
    "encode_json",
]

#: TiDB's default row size limit (``txn-entry-size-limit``): 6 MiB.
DEFAULT_MAX_MESSAGE_BYTES = 6 * 1024 * 1024

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

_CLASSES: dict[str, type[BaseMessage]] = {}
_FIELDS: dict[type[BaseMessage], frozenset[str]] = {}
for _cls in (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
):
    _CLASSES[_cls.model_fields["type"].default] = _cls
    _FIELDS[_cls] = frozenset(_cls.model_fields)
    # The fast path below builds instances without __init__; that is only sound while the
    # message classes keep no private attributes to initialise.
    assert not _cls.__private_attributes__, _cls


def _check_json(value: Any, where: str) -> None:
    """Reject values that JSON would store as something else."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                raise InvalidInputError(f"{path}: integer {item} does not fit in 64 bits")
        elif kind is float:
            if not math.isfinite(item):
                raise InvalidInputError(f"{path}: {item!r} has no JSON form")
        elif kind is dict:
            for key, sub in item.items():
                if type(key) is not str:
                    raise InvalidInputError(
                        f"{path}: dict key {key!r} is not a str; JSON would turn it into one"
                    )
                stack.append((sub, f"{path}.{key}"))
        elif kind is list:
            stack.extend((sub, f"{path}[{i}]") for i, sub in enumerate(item))
        else:
            raise InvalidInputError(
                f"{path}: a {kind.__name__} cannot be stored and read back unchanged; "
                "use str, int, float, bool, None, list or dict"
            )


def encode(message: BaseMessage, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> str:
    """Encode one message to the JSON text stored in its row.

    Example::

        >>> encode(HumanMessage("hi"))[:30]
        '{"type":"human","data":{"conte'

    Raises:
        InvalidInputError: ``message`` is not a ``BaseMessage``, or holds a value JSON cannot
            keep exactly.
        MessageTooLargeError: the encoded message is larger than ``max_bytes``.
    """
    if not isinstance(message, BaseMessage):
        raise InvalidInputError(
            f"expected a langchain_core BaseMessage, got {type(message).__name__}"
        )
    if message.type not in _CLASSES:
        raise InvalidInputError(f"message type {message.type!r} is not supported")
    data = message.model_dump()
    _check_json(data, f"{type(message).__name__}")
    try:
        raw = orjson.dumps({"type": message.type, "data": data})
    except orjson.JSONEncodeError as exc:
        raise InvalidInputError(f"{type(message).__name__} cannot be encoded: {exc}") from exc
    if len(raw) > max_bytes:
        raise MessageTooLargeError(
            f"{type(message).__name__} encodes to {len(raw):,} bytes, over the limit of "
            f"{max_bytes:,} bytes (TiDB's default row limit is 6 MiB). Split the content, or "
            "store large payloads elsewhere and keep a reference."
        )
    return raw.decode()


def encode_batch(
    messages: Sequence[BaseMessage], *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> list[str]:
    """Encode a batch, checking every item before returning anything.

    Raises:
        InvalidInputError: the batch is not a sequence of messages, or an item cannot be stored.
        MessageTooLargeError: an item is over ``max_bytes``.
    """
    if isinstance(messages, str | bytes | BaseMessage) or not isinstance(messages, Sequence):
        raise InvalidInputError(
            f"expected a sequence of BaseMessage, got {type(messages).__name__}"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, BaseMessage):
            raise InvalidInputError(
                f"item {i} of the batch is a {type(message).__name__}, not a BaseMessage; "
                "nothing was written"
            )
    return [encode(m, max_bytes=max_bytes) for m in messages]


def _build(cls: type[BaseMessage], data: dict[str, Any]) -> BaseMessage:
    if data.keys() == _FIELDS[cls]:
        message = cls.__new__(cls)
        object.__setattr__(message, "__dict__", data)
        object.__setattr__(message, "__pydantic_fields_set__", set(data))
        object.__setattr__(message, "__pydantic_extra__", {})
        object.__setattr__(message, "__pydantic_private__", None)
        return message
    return cls(**data)


def decode(text: str | bytes) -> BaseMessage:
    """Decode the JSON text of one row back into its message.

    Raises:
        ValueError: the text is not a stored message.
    """
    stored = orjson.loads(text)
    try:
        cls = _CLASSES[stored["type"]]
        data = stored["data"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a stored message: {str(text)[:80]!r}") from exc
    return _build(cls, data)


def decode_many(texts: Iterable[str | bytes]) -> list[BaseMessage]:
    """Decode many rows; see :func:`decode`."""
    return [decode(text) for text in texts]


def encode_json(value: Any, where: str = "metadata", *, max_bytes: int | None = None) -> str:
    """Encode free-form JSON (per-message or session metadata) exactly, or refuse it.

    Example::

        >>> encode_json({"topic": "billing"}, max_bytes=1024)
        '{"topic":"billing"}'

    Raises:
        InvalidInputError: ``value`` holds something JSON would change (see :func:`encode`),
            such as a key with a lone surrogate.
        MessageTooLargeError: the encoded JSON is over ``max_bytes`` bytes (UTF-8, not
            characters).
    """
    _check_json(value, where)
    try:
        raw = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise InvalidInputError(f"{where} cannot be encoded: {exc}") from exc
    if max_bytes is not None and len(raw) > max_bytes:
        raise MessageTooLargeError(
            f"{where} encodes to {len(raw):,} bytes, over the limit of {max_bytes:,} bytes "
            "(TiDB's default row limit is 6 MiB); nothing was written. Keep large payloads "
            "elsewhere and store a reference."
        )
    return raw.decode()


def decode_json(text: str | bytes | None) -> Any:
    """Decode what :func:`encode_json` stored; ``None`` stays ``None``."""
    return None if text is None else orjson.loads(text)
