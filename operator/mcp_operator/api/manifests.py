"""Read manifest files the way a user hands them over: anything at all.

``render`` must answer every input with one clear line per problem, never a traceback: an
empty file, a binary file, broken YAML, duplicate keys (YAML silently keeps the last one,
so a typo'd override would vanish), a ``List`` (``kubectl get -o yaml`` output, whose items
are what counts) and objects of other kinds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml


class InputError(ValueError):
    """The input as a whole is unusable; the message is one line."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            line = seen.get(key)
        except TypeError:  # an unhashable key (a mapping as a key): let PyYAML say so
            continue
        if line is not None:
            raise InputError(
                f"line {key_node.start_mark.line + 1}: duplicate key {key!r} "
                f"(first at line {line + 1})"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def decode(data: bytes) -> str:
    if b"\x00" in data:
        raise InputError("is a binary file, not YAML")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("is not UTF-8 text (a binary file?), not YAML") from None


def load_documents(data: bytes) -> list[Any]:
    """Every non-empty YAML document of ``data``; :class:`InputError` when there is none."""
    text = decode(data)
    try:
        documents = [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "").split())
        raise InputError(f"is not valid YAML: {where}{problem}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"is not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise InputError("is not usable YAML: nested too deeply") from None
    if not documents:
        raise InputError("contains no YAML documents (empty file?)")
    return documents


@dataclass(frozen=True)
class Entry:
    """One object to validate and where it came from (``document 1``, ``document 0 item 3``)."""

    label: str
    document: Any
    problem: str | None = None


def entries(documents: list[Any]) -> Iterator[Entry]:
    """Documents with ``List`` kinds (``kubectl get -o yaml``) expanded into their items."""
    for index, doc in enumerate(documents):
        is_list = (
            isinstance(doc, dict)
            and isinstance(doc.get("kind"), str)
            and doc["kind"].endswith("List")
            and "items" in doc
        )
        if not is_list:
            yield Entry(f"document {index}", doc)
            continue
        items = doc["items"]
        if not isinstance(items, list):
            yield Entry(f"document {index}", doc, problem="items: must be a list")
            continue
        if not items:
            yield Entry(f"document {index}", doc, problem="items: the List is empty")
            continue
        for position, item in enumerate(items):
            yield Entry(f"document {index} item {position}", item)


def name_of(document: Any) -> str:
    meta = document.get("metadata") if isinstance(document, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else "?"
