"""The saver's rows: read rows into ``CheckpointTuple``, and a ``put`` into statements.

Pure functions, no I/O: checks and serialisation run here, before anything is sent, so that
bad input leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.types import TASKS

from tidb_memory import _checks
from tidb_memory._checks import ID_MAX_CHARS
from tidb_memory.engine import Backend, Binary
from tidb_memory.errors import InvalidInputError, MessageTooLargeError
from tidb_memory.langgraph._saver_sql import (
    ID_MAX,
    KIND_BLOB,
    KIND_CHECKPOINT,
    KIND_WRITE,
    Select,
    Tables,
    insert_blobs_statement,
    touch_thread_statement,
    upsert_checkpoint_statement,
)

#: Strings longer than this are stored as blobs even when primitives are inlined, so that the
#: checkpoint row stays small.
INLINE_STR_MAX = 4096
#: Budget of parameter text per insert statement (MariaDB's max_allowed_packet is 16 MiB).
STATEMENT_BYTES = 12 * 1024 * 1024
#: SQLite's bound-parameter limit on old builds is 999.
_SQLITE_PARAMS = 900
_U64 = 2**64
_I64 = -(2**63)

#: A statement and its parameters.
Statement = tuple[str, list[Any]]


class CheckpointTooLargeError(MessageTooLargeError):
    """A channel value, a pending write or a checkpoint row is over ``max_blob_bytes``.

    Nothing of the call was written. The message names the channel and the ways out.
    """


def weight(row: Sequence[Any]) -> int:
    """Roughly the bytes ``row`` adds to a MySQL statement."""
    size = 64
    for value in row:
        kind = type(value)
        if kind is Binary:
            size += len(value.data) * 4 // 3 + 16  # base64
        elif kind is str:
            size += len(value) if value.isascii() else len(value.encode())
        else:
            size += 8
    return size


@lru_cache(maxsize=1024)
def ns_hash(checkpoint_ns: str) -> bytes:
    return hashlib.md5(checkpoint_ns.encode("utf-8"), usedforsecurity=False).digest()


def text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    return str(value)


def check_thread_id(thread_id: object) -> str:
    """A thread id as stored: LangGraph allows any value, which is stored as its ``str``."""
    if thread_id is None:
        raise InvalidInputError('config["configurable"]["thread_id"] is required')
    return _checks.check_id(str(thread_id), "thread_id", max_chars=ID_MAX_CHARS)


def check_id(name: str, value: object) -> str:
    """A checkpoint id, task id or channel version: keys compared under PAD SPACE."""
    return _checks.check_id(str(value), name, max_chars=ID_MAX)


def check_ns(value: object) -> str:
    """A namespace: stored whole and keyed by its hash, so only valid Unicode is asked of it."""
    return _checks.check_text(str(value or ""), "checkpoint_ns")


def inlinable(value: Any) -> bool:
    """Values kept in the checkpoint's JSON itself: JSON reads them back unchanged."""
    kind = type(value)
    if value is None or kind is bool:
        return True
    if kind is int:
        return bool(_I64 <= value < _U64)
    if kind is float:
        return math.isfinite(value)
    if kind is str:
        if len(value) > INLINE_STR_MAX:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    return False


def filter_terms(flt: Mapping[Any, Any]) -> tuple[tuple[str, ...], list[Any]]:
    """The SQL side of a metadata filter: a kind and parameters for each key it can narrow by.

    LangGraph's ``InMemorySaver`` keeps a checkpoint when ``value == metadata.get(key)`` for
    every key: Python equality, so ``1 == 1.0 == True``, a missing key equals ``None``, and a
    list or dict matches only an equal one. SQL pre-selects a superset of those rows (by JSON
    type, and by value for strings); :func:`metadata_matches` then decides on each row, so both
    backends return exactly what ``InMemorySaver`` returns. Keys a JSON path cannot spell on
    every backend (quotes, backslashes, control characters, empty) are left to the client.
    """
    kinds: list[str] = []
    params: list[Any] = []
    for key, value in flt.items():
        if isinstance(key, str):
            _checks.check_text(key, "filter key")
        if isinstance(value, str):
            _checks.check_text(value, f"filter value of {key!r}")
        if not isinstance(key, str) or not key or _UNSAFE_KEY.search(key):
            continue
        path = f'$."{key}"'
        if value is None:
            kind = "null"
        elif isinstance(value, bool | int | float):
            kind = "number"  # True == 1 == 1.0 in Python: compared on the client
        elif isinstance(value, str):
            kind = "text"
        elif isinstance(value, list):
            kind = "array"
        elif isinstance(value, dict):
            kind = "object"
        else:
            continue  # never equal to a JSON value; the client says so
        kinds.append(kind)
        params += [path, value, path] if kind == "text" else [path]
    return tuple(kinds), params


_UNSAFE_KEY = re.compile(r'["\\\x00-\x1f]')


def metadata_matches(metadata: Mapping[str, Any], flt: Mapping[Any, Any]) -> bool:
    """``InMemorySaver``'s rule, verbatim: every filter value equals the metadata's."""
    return all(value == metadata.get(key) for key, value in flt.items())


def to_json(value: Any, what: str) -> bytes:
    """``value`` as UTF-8 JSON; sizes are counted on these bytes, never on characters."""
    try:
        return orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError, also for a lone surrogate
        raise InvalidInputError(f"{what} cannot be stored as JSON: {exc}") from exc


def too_large(what: str, size: int, limit: int) -> CheckpointTooLargeError:
    return CheckpointTooLargeError(
        f"{what} serialises to {size:,} bytes, over max_blob_bytes={limit:,} (TiDB's default "
        "row limit is 6 MiB); nothing was written. Keep channel values small: store an "
        "append-only channel such as the message list in a DeltaChannel "
        "(langgraph.channels.DeltaChannel), so each checkpoint stores only what changed, or "
        "summarise or trim long conversations (langchain's SummarizationMiddleware, "
        "RemoveMessage), and keep large payloads outside the graph state."
    )


@dataclass(slots=True)
class Prepared:
    """Everything an ``aput`` sends, computed before any I/O."""

    #: The changed blobs' inserts, then the checkpoint's upsert: in this order, so that a
    #: stored checkpoint never references a blob that is not there.
    statements: list[tuple[str, list[Any]]]


@dataclass(slots=True)
class ListQuery:
    """An ``alist`` request, checked and turned into SQL parameters before any I/O."""

    sel: Select
    params: list[Any]
    #: The metadata filter, applied to each row after SQL has narrowed them down.
    filter: Mapping[Any, Any] | None = None
    #: Paging state: checkpoints still to return (``None``: no limit), where the next page
    #: starts, and whether the last page was read.
    remaining: int | None = None
    cursor: list[Any] | None = None
    done: bool = False


def next_version(current: str | int | None) -> str:
    """The Postgres saver's scheme: a 32-digit counter, a dot and a random fraction, so that
    two forks of one checkpoint never mint the same version."""
    if current is None:
        current_v = 0
    elif isinstance(current, int):
        current_v = current
    else:
        current_v = int(str(current).split(".")[0])
    return f"{current_v + 1:032}.{random.random():016}"


def hash_value(backend: Backend, checkpoint_ns: str) -> Any:
    """The namespace hash as a statement parameter."""
    digest = ns_hash(checkpoint_ns)
    # aiomysql cannot send bytes under PyMySQL >= 1.2: hex text, UNHEX() in the statement.
    return digest.hex() if backend == "mysql" else digest


def config_of(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def ns_hex_of(item: CheckpointTuple) -> str:
    return ns_hash(str(item.config["configurable"]["checkpoint_ns"])).hex().upper()


def assemble(rows: Sequence[Sequence[Any]], serde: SerializerProtocol) -> list[CheckpointTuple]:
    """Rows of :func:`~._saver_sql.read_statement` -> checkpoint tuples, newest first."""
    heads: dict[tuple[str, str, str], Sequence[Any]] = {}
    blobs: dict[tuple[str, str, str], list[Sequence[Any]]] = {}
    writes: dict[tuple[str, str, str], list[Sequence[Any]]] = {}
    sends: dict[tuple[str, str, str], list[Sequence[Any]]] = {}
    for fields, metadata, data in rows:
        # [kind, thread_id, ns_hex, checkpoint_id, s1, s2, s3, s4, n, data]
        row = orjson.loads(fields)
        row.append(data)
        kind = int(row[0])
        key = (text(row[1]), text(row[2]), text(row[3]))
        if kind == KIND_CHECKPOINT:
            row[5] = metadata
            heads[key] = row
        elif kind == KIND_BLOB:
            blobs.setdefault(key, []).append(row)
        elif kind == KIND_WRITE:
            writes.setdefault(key, []).append(row)
        else:
            sends.setdefault(key, []).append(row)
    loads = serde.loads_typed
    out: list[tuple[tuple[str, str, str], CheckpointTuple]] = []
    for key, row in heads.items():
        thread_id, ns_hex, checkpoint_id = key
        checkpoint_ns = text(row[7])
        checkpoint: dict[str, Any] = orjson.loads(row[9])
        values: dict[str, Any] = checkpoint.get("channel_values") or {}
        for b in blobs.get(key, ()):
            values[text(b[4])] = loads((text(b[6]), bytes(b[9])))
        checkpoint["channel_values"] = values
        if int(row[8]) < 4 and key in sends:
            _migrate_pending_sends(checkpoint, sends[key], serde)
        pending = sorted(
            writes.get(key, ()),
            key=lambda w: writes_sort_key(text(w[7]), text(w[4]), int(w[8])),
        )
        parent = row[4]
        out.append(
            (
                (checkpoint_id, thread_id, ns_hex),
                CheckpointTuple(
                    config=config_of(thread_id, checkpoint_ns, checkpoint_id),
                    checkpoint=checkpoint,  # type: ignore[arg-type]
                    metadata=orjson.loads(row[5]),
                    parent_config=(
                        config_of(thread_id, checkpoint_ns, text(parent))
                        if parent is not None
                        else None
                    ),
                    pending_writes=[
                        (text(w[4]), text(w[5]), loads((text(w[6]), bytes(w[9])))) for w in pending
                    ],
                ),
            )
        )
    out.sort(key=lambda item: item[0], reverse=True)
    return [item[1] for item in out]


def _migrate_pending_sends(
    checkpoint: dict[str, Any], rows: Sequence[Sequence[Any]], serde: SerializerProtocol
) -> None:
    """Checkpoints older than format 4 keep their pending sends as the parent's writes."""
    ordered = sorted(rows, key=lambda w: (text(w[7]), text(w[4]), int(w[8])))
    checkpoint["channel_values"][TASKS] = [
        serde.loads_typed((text(w[6]), bytes(w[9]))) for w in ordered
    ]
    versions = checkpoint.setdefault("channel_versions", {})
    versions[TASKS] = max(versions.values()) if versions else next_version(None)


@dataclass(frozen=True, slots=True)
class PutOptions:
    """What a saver decides about the rows it writes."""

    backend: Backend
    tables: Tables
    serde: SerializerProtocol
    inline_primitives: bool
    max_blob_bytes: int


def prepare_put(
    opts: PutOptions,
    thread_id: str,
    checkpoint_ns: str,
    parent_id: object,
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    new_versions: ChannelVersions,
) -> Prepared:
    """Check and serialise a ``put``: every statement it sends, before any I/O."""
    backend, limit = opts.backend, opts.max_blob_bytes
    checkpoint_id = check_id("checkpoint id", checkpoint["id"])
    parent = None if parent_id is None else check_id("parent checkpoint id", parent_id)
    ns_value = hash_value(backend, checkpoint_ns)
    versions = checkpoint.get("channel_versions") or {}
    inline: dict[str, Any] = {}
    refs: list[list[str]] = []
    rows: list[list[Any]] = []
    for channel, value in checkpoint["channel_values"].items():
        if opts.inline_primitives and inlinable(value):
            inline[channel] = value
            continue
        if channel not in versions:
            continue  # unversioned: nothing could find it again (as in the Postgres saver)
        version = check_id("channel version", versions[channel])
        check_id("channel", channel)
        refs.append([channel, version])
        # Unchanged channels reuse the blob stored with their version. A primitive may have
        # been stored inline instead, by a saver with inline_primitives=True: it is small,
        # so it is (re)sent each time and the blob is sure to exist.
        if channel in new_versions or inlinable(value):
            type_, data = opts.serde.dumps_typed(value)
            if len(data) > limit:
                raise too_large(f"channel {channel!r}", len(data), limit)
            rows.append([thread_id, ns_value, channel, version, type_, Binary(data)])
    stored = dict(checkpoint)
    stored["channel_values"] = inline
    body = to_json(stored, "the checkpoint")
    meta_dict = get_serializable_checkpoint_metadata(config, metadata)
    meta = to_json(meta_dict, "the metadata")
    user_id = meta_dict.get("user_id")
    if user_id is not None:
        # The owner alist_threads lists by: from config["configurable"] or the metadata.
        user_id = _checks.check_id(str(user_id), "metadata user_id", max_chars=ID_MAX_CHARS)
    # Bytes, not characters: an emoji is one character and four bytes of the row.
    if len(body) + len(meta) > limit:
        raise too_large(
            f"checkpoint {checkpoint_id} (inline values and metadata)",
            len(body) + len(meta),
            limit,
        )
    params = [
        thread_id, ns_value, checkpoint_ns, checkpoint_id, parent,
        int(checkpoint.get("v", 1)), body.decode(), meta.decode(), orjson.dumps(refs).decode(),
    ]  # fmt: skip
    return Prepared(
        [
            *batches(backend, opts.tables, rows, insert_blobs_statement),
            (upsert_checkpoint_statement(backend, opts.tables), params),
            (
                touch_thread_statement(backend, opts.tables),
                [thread_id, user_id] if backend == "mysql" else [thread_id, user_id, thread_id],
            ),
        ]
    )


def batches(
    backend: Backend,
    tables: Tables,
    rows: list[list[Any]],
    builder: Callable[[Backend, Tables, int], str],
) -> list[Statement]:
    """Multi-row inserts of ``rows``: one statement unless the rows are very large (MySQL's
    statement budget) or many (SQLite's parameter limit)."""
    groups: list[list[list[Any]]] = []
    if backend == "mysql":
        batch: list[list[Any]] = []
        size = 0
        for row in rows:
            row_weight = weight(row)
            if batch and size + row_weight > STATEMENT_BYTES:
                groups.append(batch)
                batch, size = [], 0
            batch.append(row)
            size += row_weight
        if batch:
            groups.append(batch)
    elif rows:
        step = max(1, _SQLITE_PARAMS // len(rows[0]))
        groups = [rows[i : i + step] for i in range(0, len(rows), step)]
    return [
        (builder(backend, tables, len(batch)), [value for row in batch for value in row])
        for batch in groups
    ]
