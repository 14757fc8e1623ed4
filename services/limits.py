"""Bounded parsing of JSON and YAML documents from untrusted callers (job specs).

Invariant: no document reaches a recursive parser, a constructor or pydantic before its size, nesting
depth, node count, string lengths and collection lengths are known to be within `DocLimits`, and no
non-finite number gets through. YAML anchors and aliases are refused outright (an alias bomb is a few
hundred bytes that expand to gigabytes), as are explicit tags other than the core ones and multi-document
streams. Each problem is a `DocumentError` carrying the dotted path where it was found.

JSON (text that starts with `{` or `[` and parses as JSON) is read with the C `json` parser after a
linear scan has bounded its depth; anything else is read as YAML: a first pass over the event stream (no
recursion, no object construction) checks the limits and refuses aliases, then the safe loader builds the
value. Both paths end with the same iterative walk over the value.
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

CORE_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq"))
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DocLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_bytes: int = Field(64 * 1024, ge=1, description="UTF-8 size of the whole document.")
    max_depth: int = Field(32, ge=1, description="Nested mappings/lists.")
    max_nodes: int = Field(10_000, ge=1, description="Scalars, mappings and lists in all.")
    max_string: int = Field(8192, ge=1, description="Characters in one string (keys too).")
    max_items: int = Field(1000, ge=1, description="Entries of one mapping or list.")


class DocumentError(ValueError):
    """A document refused before parsing finished; `loc` is the dotted path ('' for the whole body)."""

    def __init__(self, loc: str, msg: str, too_large: bool = False) -> None:
        self.loc, self.msg, self.too_large = loc, msg, too_large
        super().__init__(f"{loc or '<document>'}: {msg}")


def _join(path: list[str]) -> str:
    return ".".join(path)


# ---------------------------------------------------------------- JSON
def _json_depth(text: str, max_depth: int) -> None:
    """Raise if brackets outside strings nest deeper than `max_depth`; reports the path to that point."""
    path: list[str] = []
    stack: list[list] = []  # per open container: [kind, index or key, expecting a key]
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if stack and stack[-1][0] == "{" and stack[-1][2]:
                stack[-1][1], stack[-1][2] = text[i + 1 : j][:64], False
            i = j + 1
            continue
        if c in "[{":
            if stack:
                path.append(str(stack[-1][1]))
            stack.append([c, 0 if c == "[" else "", c == "{"])
            if len(stack) > max_depth:
                raise DocumentError(_join(path), f"nested deeper than {max_depth} levels")
        elif c in "]}":
            if stack:
                stack.pop()
                if path:
                    path.pop()
        elif c == "," and stack:
            if stack[-1][0] == "[":
                stack[-1][1] += 1
            else:
                stack[-1][2] = True
        i += 1


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class _DuplicateKey(Exception):
    pass


def _load_json(text: str, limits: DocLimits) -> Any:
    """NaN / Infinity become floats here and are refused, with their path, by the walk."""
    _json_depth(text, limits.max_depth)
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        raise DocumentError("", f"key {str(e.args[0])[:64]!r} appears twice in one mapping") from None


# ---------------------------------------------------------------- YAML
def _scan_yaml(text: str, limits: DocLimits) -> None:
    """Check the limits on the event stream: nothing is constructed, nothing recurses."""
    stack: list[
        list
    ] = []  # per collection: [is mapping, entries, pending key (None: a key is next), loc, keys]
    nodes = docs = 0
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.DocumentStartEvent):
            docs += 1
            if docs > 1:
                raise DocumentError("", "a job spec is one YAML document (found a second '---')")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            stack.pop()
        elif isinstance(event, yaml.AliasEvent):
            raise DocumentError(_slot(stack), "YAML aliases (*name) are not accepted; write the value out")
        elif isinstance(event, (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            nodes += 1
            _check_node(event, stack, nodes, limits)


def _slot(stack: list[list]) -> str:
    """Path of the node the next event starts."""
    if not stack:
        return ""
    is_map, entries, key, loc, _ = stack[-1]
    leaf = (key or "") if is_map else str(entries)
    return f"{loc}.{leaf}" if loc and leaf else (loc or leaf)


def _check_node(event, stack: list[list], nodes: int, limits: DocLimits) -> None:
    here = _slot(stack)
    if nodes > limits.max_nodes:
        raise DocumentError(here, f"more than {limits.max_nodes} values in one document")
    if event.anchor is not None:
        raise DocumentError(here, "YAML anchors (&name) are not accepted")
    if event.tag is not None and event.tag not in CORE_TAGS and event.tag != "!":
        raise DocumentError(here, f"YAML tag {event.tag[:64]!r} is not accepted")
    scalar = isinstance(event, yaml.ScalarEvent)
    if scalar and len(event.value) > limits.max_string:
        raise DocumentError(here, f"a value longer than {limits.max_string} characters")
    if stack:
        top = stack[-1]
        if top[0] and top[2] is None:  # a mapping key
            if not scalar:
                raise DocumentError(top[3], "mapping keys must be plain values, not mappings or lists")
            top[1] += 1
            if top[1] > limits.max_items:
                raise DocumentError(top[3], f"more than {limits.max_items} entries")
            if event.value in top[4]:
                raise DocumentError(top[3], f"key {event.value[:64]!r} appears twice in one mapping")
            top[4].add(event.value)
            top[2] = event.value[:64]
            return
        if top[0]:
            top[2] = None  # this node is the value; the next scalar is a key again
        else:
            top[1] += 1
            if top[1] > limits.max_items:
                raise DocumentError(top[3], f"more than {limits.max_items} entries")
    if not scalar:
        stack.append([isinstance(event, yaml.MappingStartEvent), 0, None, here, set()])
        if len(stack) > limits.max_depth:
            raise DocumentError(here, f"nested deeper than {limits.max_depth} levels")


def _load_yaml(text: str, limits: DocLimits) -> Any:
    _scan_yaml(text, limits)
    # the scan refused every alias, so construction builds a tree no larger than the document
    return yaml.load(text, Loader=_BaseLoader)  # noqa: S506 - a SafeLoader


# ---------------------------------------------------------------- both
def check_tree(value: Any, limits: DocLimits | None = None) -> None:
    """Iterative check of a built value: sizes, node count, finite numbers, string keys."""
    limits = limits or DocLimits()
    todo: list[tuple[str, Any, int]] = [("", value, 0)]
    nodes = 0
    while todo:
        loc, v, depth = todo.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            raise DocumentError(loc, f"more than {limits.max_nodes} values in one document")
        if depth > limits.max_depth:
            raise DocumentError(loc, f"nested deeper than {limits.max_depth} levels")
        if isinstance(v, float) and not math.isfinite(v):
            raise DocumentError(loc, f"{v} is not a finite number")
        elif isinstance(v, str) and len(v) > limits.max_string:
            raise DocumentError(loc, f"a value longer than {limits.max_string} characters")
        elif isinstance(v, (list, dict)) and len(v) > limits.max_items:
            raise DocumentError(loc, f"more than {limits.max_items} entries")
        if isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise DocumentError(loc, f"mapping keys must be strings, not {type(k).__name__}")
                if len(k) > limits.max_string:
                    raise DocumentError(loc, f"a key longer than {limits.max_string} characters")
                todo.append((f"{loc}.{k}" if loc else k, item, depth + 1))
        elif isinstance(v, list):
            todo.extend((f"{loc}.{i}" if loc else str(i), item, depth + 1) for i, item in enumerate(v))


def unpaired_surrogates(value: Any) -> list[str]:
    """Paths of strings (or keys) holding an unpaired surrogate: JSON escapes like "\\ud800" decode to
    text that cannot be stored or shown."""
    out, todo = [], [("", value)]
    while todo:
        loc, v = todo.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                out.append(loc)
        elif isinstance(v, dict):
            todo.extend((loc, k) for k in v)
            todo.extend((f"{loc}.{k}" if loc else str(k), item) for k, item in v.items())
        elif isinstance(v, list):
            todo.extend((f"{loc}.{i}" if loc else str(i), item) for i, item in enumerate(v))
    return sorted(set(out))


def load_document(text: str, limits: DocLimits | None = None) -> Any:
    """Parse JSON or YAML within `limits`; raises DocumentError (with `too_large` for the size limit)."""
    limits = limits or DocLimits()
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise DocumentError("", f"the document is {size} bytes; the limit is {limits.max_bytes}", True)
    value: Any = None
    parsed = False
    if text.lstrip()[:1] in ("{", "["):
        try:
            value, parsed = _load_json(text, limits), True
        except json.JSONDecodeError:
            pass  # not JSON after all: YAML flow style, read below
        except (ValueError, RecursionError) as e:  # a 5000-digit integer, say
            if isinstance(e, DocumentError):
                raise
            raise DocumentError("", f"not a valid document: {str(e)[:200]}") from None
    if not parsed:
        try:
            value = _load_yaml(text, limits)
        except DocumentError:
            raise
        except yaml.YAMLError as e:
            raise DocumentError("", f"not valid YAML/JSON: {str(e)[:500]}") from None
        except (ValueError, TypeError, OverflowError, RecursionError) as e:
            raise DocumentError("", f"not a valid document: {str(e)[:200]}") from None
    check_tree(value, limits)
    return value
