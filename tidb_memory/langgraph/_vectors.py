"""Semantic search without I/O: the index configuration, the texts an item embeds, and vectors.

LangGraph's ``index={"dims", "embed", "fields"}`` is read once, at construction. An item
embeds the text at each field path (LangGraph's own path syntax, so ``"a.b"`` and
``"messages[*].content"`` select what ``InMemoryStore`` selects); an array path gives one
vector per element, named ``path.i``, and the best of them scores the item.

Vectors travel as float32: as little-endian bytes on MySQL, MariaDB and SQLite, where the
client computes the cosine, and as ``'[x,y,...]'`` text for TiDB's ``VECTOR(dims)`` column,
where the server does (``VEC_COSINE_DISTANCE``). Both score ``1 - cosine distance``.
"""

from __future__ import annotations

import math
import re
import struct
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from langchain_core.embeddings import Embeddings
from langgraph.store.base import ensure_embeddings, get_text_at_path, tokenize_path

from ..errors import ConfigurationError, InvalidInputError

__all__ = [
    "MAX_DIMS",
    "IndexSettings",
    "check_vectors",
    "pack",
    "similarities",
    "parse_index",
    "texts_to_embed",
    "tidb_has_vectors",
    "unpack",
    "vector_literal",
]

#: TiDB's largest ``VECTOR`` dimension.
MAX_DIMS = 16383

_TIDB_VERSION = re.compile(r"tidb-v?(\d+)\.(\d+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class IndexSettings:
    """A checked ``index`` configuration."""

    dims: int
    embeddings: Embeddings
    #: (path, tokens); ``"$"`` (the whole value) has no tokens.
    fields: tuple[tuple[str, tuple[str, ...] | None], ...]


def _tokens(path: str) -> tuple[str, ...] | None:
    if path == "$":
        return None
    return tuple(tokenize_path(path))


def parse_index(index: Mapping[str, Any] | None) -> IndexSettings | None:
    """Check LangGraph's ``IndexConfig``; ``None`` when semantic search is off.

    Raises:
        ConfigurationError: ``dims`` is not a positive int up to 16383, ``embed`` is missing or
            ``fields`` is not a list of str.
    """
    if index is None:
        return None
    if not isinstance(index, Mapping):
        raise ConfigurationError(
            "index must be a dict: {'dims': int, 'embed': ..., 'fields': [...]}"
        )
    dims = index.get("dims")
    if not isinstance(dims, int) or isinstance(dims, bool) or not 0 < dims <= MAX_DIMS:
        raise ConfigurationError(f"index['dims'] must be an int from 1 to {MAX_DIMS}, not {dims!r}")
    if index.get("embed") is None:
        raise ConfigurationError(
            "index['embed'] is required: a LangChain Embeddings, a function from texts to "
            "vectors, or a provider string such as 'openai:text-embedding-3-small'"
        )
    fields = index.get("fields") or ["$"]
    if isinstance(fields, str) or not all(isinstance(f, str) and f for f in fields):
        raise ConfigurationError("index['fields'] must be a list of field paths such as ['text']")
    return IndexSettings(
        dims=dims,
        embeddings=ensure_embeddings(index["embed"]),
        fields=tuple((path, _tokens(path)) for path in fields),
    )


def texts_to_embed(
    settings: IndexSettings, value: Mapping[str, Any], index: Sequence[str] | None
) -> list[tuple[str, str]]:
    """The (field name, text) pairs an item embeds: ``index`` is a put's own field list, or
    ``None`` for the configured fields. Missing fields embed nothing."""
    fields = settings.fields if index is None else tuple((p, _tokens(p)) for p in index)
    out: list[tuple[str, str]] = []
    for path, tokens in fields:
        texts = get_text_at_path(value, "$" if tokens is None else list(tokens))
        if len(texts) == 1:
            out.append((path, texts[0]))
        else:
            out.extend((f"{path}.{i}", text) for i, text in enumerate(texts))
    return out


def check_vectors(vectors: Sequence[Sequence[float]], count: int, dims: int) -> list[list[float]]:
    """The embedder's output, checked: ``count`` vectors of ``dims`` finite floats.

    Raises:
        InvalidInputError: the embedder returned another count, size, or a NaN/infinity.
    """
    if len(vectors) != count:
        raise InvalidInputError(f"the embedder returned {len(vectors)} vectors for {count} texts")
    out: list[list[float]] = []
    for vector in vectors:
        floats = [float(x) for x in vector]
        if len(floats) != dims:
            raise InvalidInputError(
                f"the embedder returned a vector of {len(floats)} dimensions; the store's "
                f"index has dims={dims}"
            )
        if not all(math.isfinite(x) for x in floats):
            raise InvalidInputError("the embedder returned a vector with NaN or infinity")
        out.append(floats)
    return out


def pack(vector: Sequence[float]) -> bytes:
    """float32, little-endian."""
    return struct.pack(f"<{len(vector)}f", *vector)


def unpack(data: bytes) -> array[float]:
    out = array("f")
    out.frombytes(bytes(data))
    if struct.pack("=I", 1) != struct.pack("<I", 1):  # pragma: no cover - big-endian hosts
        out.byteswap()
    return out


def similarities(query: Sequence[float], blobs: Sequence[bytes]) -> list[float]:
    """``1 - cosine distance`` of ``query`` to each packed vector; 0.0 where either vector is
    zero (as InMemoryStore). NumPy computes it when installed (as InMemoryStore does), else
    plain Python: the same figures within float rounding."""
    if not blobs:
        return []
    np = _numpy()
    if np is not None:
        q = np.asarray(query, dtype=np.float64)
        m = np.frombuffer(b"".join(bytes(b) for b in blobs), dtype="<f4").reshape(len(blobs), -1)
        m = m.astype(np.float64)
        norms = np.linalg.norm(m, axis=1) * float(np.linalg.norm(q))
        dots = m @ q
        out = np.zeros(len(blobs))
        np.divide(dots, norms, out=out, where=norms != 0)
        return [float(x) for x in out]
    query_norm = math.sqrt(math.fsum(x * x for x in query))
    scores: list[float] = []
    for blob in blobs:
        vector = unpack(blob)
        norm = math.sqrt(sum(map(float.__mul__, vector, vector)))
        if norm == 0.0 or query_norm == 0.0:
            scores.append(0.0)
        else:
            scores.append(sum(map(float.__mul__, query, vector)) / (query_norm * norm))
    return scores


@lru_cache(maxsize=1)
def _numpy() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with most LangChain installs
        return None
    return numpy


def vector_literal(vector: Sequence[float]) -> str:
    """TiDB's vector text, ``'[0.5,-1.25]'``; ``repr`` of the float32 value round-trips."""
    return "[" + ",".join(repr(float(x)) for x in array("f", vector)) + "]"


def tidb_has_vectors(server_version: str) -> bool:
    """True for TiDB v8.4 and later, which have the ``VECTOR`` type.

    Example::

        >>> tidb_has_vectors("8.0.11-TiDB-v8.5.1")
        True
        >>> tidb_has_vectors("10.11.6-MariaDB")
        False
    """
    found = _TIDB_VERSION.search(server_version)
    if found is None:
        return False
    return (int(found.group(1)), int(found.group(2))) >= (8, 4)
