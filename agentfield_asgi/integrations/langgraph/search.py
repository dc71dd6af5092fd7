"""Semantic search per LangGraph's ``IndexConfig`` on our vector memory.

Embeddings are computed here, by the configured embedder. Each indexed text of an
item (one per configured field path, one per element for ``[*]`` paths) is a
vector in the same scope id, keyed ``<memory key>\\x1f<n>`` with metadata
``record_key`` (the item's memory key) and ``ns.0``, ``ns.1``... (its labels, so a
namespace prefix narrows the vector search). A search sends the query's embedding
to ``/memory/query``; the server ranks the items by their best vector (cosine),
applies the prefix and filter, and fills up with unindexed matches, as
LangGraph's ``InMemoryStore`` does.
"""

from __future__ import annotations

from typing import Any

from langgraph.store.base import IndexConfig, PutOp, ensure_embeddings, get_text_at_path
from langgraph.store.base import tokenize_path as _tokenize

VECTOR_SEPARATOR = "\x1f"
RECORD_KEY = "record_key"
VECTOR_COUNT = "langgraph_vectors"


def namespace_filters(namespace: tuple[str, ...]) -> dict[str, str]:
    return {f"ns.{i}": label for i, label in enumerate(namespace)}


class SemanticIndex:
    """The embedder and field paths of one store."""

    def __init__(self, config: IndexConfig) -> None:
        self.dims = config["dims"]
        self.embeddings = ensure_embeddings(config.get("embed"))
        self.fields = list(config.get("fields") or ["$"])

    def _texts(self, op: PutOp) -> list[str]:
        if op.value is None or op.index is False:
            return []
        fields = self.fields if op.index is None else list(op.index)
        texts: list[str] = []
        for path in fields:
            texts.extend(get_text_at_path(op.value, path if path == "$" else _tokenize(path)))
        return texts

    async def query_fields(self, query: str) -> dict[str, Any]:
        """The ``/memory/query`` fields of a semantic search for ``query``."""
        return {"query_embedding": list(await self.embeddings.aembed_query(query))}

    async def vector_ops(
        self, puts: dict[str, PutOp], previous: dict[str, dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The batch ops replacing the vectors of every put item (embedded in one call to
        the embedder), and how many vectors each item now has."""
        texts = {key: self._texts(op) for key, op in puts.items()}
        flat = [t for ts in texts.values() for t in ts]
        vectors = list(await self.embeddings.aembed_documents(flat)) if flat else []
        ops: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        at = 0
        for memory_key, op in puts.items():
            count = len(texts[memory_key])
            meta = {RECORD_KEY: memory_key, **namespace_filters(op.namespace)}
            for n in range(count):
                key = f"{memory_key}{VECTOR_SEPARATOR}{n}"
                ops.append(
                    {
                        "op": "vector_set",
                        "key": key,
                        "embedding": [float(x) for x in vectors[at + n]],
                        "metadata": meta,
                    }
                )
            at += count
            counts[memory_key] = count
            old = (previous.get(memory_key) or {}).get("metadata", {}).get(VECTOR_COUNT, 0)
            for n in range(count, old if isinstance(old, int) else 0):
                ops.append({"op": "vector_delete", "key": f"{memory_key}{VECTOR_SEPARATOR}{n}"})
        return ops, counts


MAX_PREFIX_FILTERS = 32  # the vector search's filter limit; the server checks the prefix too


def prefix_filters(namespace_prefix: tuple[str, ...]) -> dict[str, Any]:
    """Narrow the vector search to the prefix's labels (the server also checks the key)."""
    labels = namespace_prefix[:MAX_PREFIX_FILTERS]
    return {"vector_filters": namespace_filters(labels)} if labels else {}
