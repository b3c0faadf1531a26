"""A deterministic offline embedding: each word hashes to a fixed random direction.

Texts that share words point the same way, so searches rank meaningfully, and the same text
always gives the same vector in every process (hashlib, not ``hash``). It counts its calls, so
tests can assert one ``aembed_documents`` call per batch.
"""

from __future__ import annotations

import hashlib
import random
import re

from langchain_core.embeddings import Embeddings

_WORD = re.compile(r"\w+")


def word_vector(word: str, dims: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    return [rng.gauss(0.0, 1.0) for _ in range(dims)]


def embed_text(text: str, dims: int) -> list[float]:
    out = [0.0] * dims
    for word in _WORD.findall(text.lower()) or [text]:
        for i, x in enumerate(word_vector(word, dims)):
            out[i] += x
    return out


class WordEmbeddings(Embeddings):
    """Offline embeddings that count ``embed_documents``/``aembed_documents`` calls."""

    def __init__(self, dims: int = 32) -> None:
        self.dims = dims
        self.document_calls = 0
        self.documents: list[list[str]] = []
        self.query_calls = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.document_calls += 1
        self.documents.append(list(texts))
        return [embed_text(t, self.dims) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        self.query_calls += 1
        return embed_text(text, self.dims)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        return self.embed_query(text)
