"""THE way a file a user hands us is read: YAML (config files, search spaces, bundle configs,
MLflow's MLmodel) and JSON (a bundle's metrics and provenance, a latent file's metadata).

``yaml.safe_load`` runs no code, but it lets the last of two equal keys win silently, expands
aliases without bound (a 300-byte "billion laughs" file keeps every consumer busy for minutes)
and turns a non-UTF-8 file into a UnicodeDecodeError traceback. This loader refuses all three:

- a file over ``MAX_BYTES`` (1 MiB; a config or a search space is a few KiB);
- bytes that are not UTF-8 (the message gives the byte offset);
- a mapping with the same key twice (the message gives the dotted key and both lines);
- aliases are allowed (``<<: *defaults`` is handy), but the document counted with every alias
  expanded must stay under ``MAX_NODES`` nodes, and a recursive alias is refused.

JSON gets the same size, UTF-8 and duplicate-key rules (``json.loads`` also keeps the last of two
equal keys); it has no aliases or tags.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1 << 20
MAX_NODES = 20_000
MERGE_TAG = "tag:yaml.org,2002:merge"


class UserFileError(ValueError):
    """A YAML or JSON file that is refused; ``problem`` is the message without the file's name."""

    def __init__(self, source: str, problem: str) -> None:
        self.source, self.problem = source, problem
        super().__init__(f"{source}: {problem}")


class _Walk:
    """One pass over the composed node graph: expanded size, duplicate keys, recursion."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.sizes: dict[int, int] = {}  # node id -> expanded size (each node walked once)
        self.open: set[int] = set()

    def size(self, node: Node, where: str) -> int:
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        if key in self.open:
            raise ValueError(f"{where or '<top level>'}: recursive alias")
        self.open.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            total += sum(self.size(item, f"{where}[{i}]") for i, item in enumerate(node.value))
        elif isinstance(node, MappingNode):
            total += self._mapping(node, where)
        self.open.discard(key)
        if total > MAX_NODES:
            raise ValueError(f"{where or '<top level>'}: more than {MAX_NODES} values once its "
                             "aliases are expanded (an alias bomb?)")
        self.sizes[key] = total
        return total

    def _mapping(self, node: MappingNode, where: str) -> int:
        seen: dict[Any, int] = {}
        total = 0
        for key_node, value_node in node.value:
            name = "<<"
            if key_node.tag != MERGE_TAG and isinstance(key_node, ScalarNode):
                name = self.loader.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if _hashable(name) and name in seen:
                    raise ValueError(f"{_join(where, name)}: duplicate key (line {line}; first at "
                                     f"line {seen[name]}); a YAML mapping keeps only the last")
                if _hashable(name):
                    seen[name] = line
            total += self.size(key_node, where) + self.size(value_node, _join(where, name))
        return total


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _join(where: str, name: Any) -> str:
    return f"{where}.{name}" if where else str(name)


@contextlib.contextmanager
def _refusals(source: str, syntax_error: type[Exception], language: str) -> Iterator[None]:
    """A parser's failures as UserFileError naming ``source``: bad syntax, a refused value (our
    checks raise ValueError with the key in the message), nesting too deep for the parser."""
    try:
        yield
    except syntax_error as exc:
        raise UserFileError(source, f"not valid {language}: {exc}") from None
    except ValueError as exc:
        raise UserFileError(source, str(exc)) from None
    except RecursionError:
        raise UserFileError(source, "nested too deeply") from None


def parse_yaml(text: str, source: str = "<yaml>") -> Any:
    """``text`` as Python values, refusing duplicate keys and alias bombs (UserFileError)."""
    loader = yaml.SafeLoader(text)
    try:
        with _refusals(source, yaml.YAMLError, "YAML"):
            node = loader.get_single_node()
            if node is None:
                return None
            _Walk(loader).size(node, "")
            return loader.construct_document(node)
    finally:
        loader.dispose()


def read_user_text(path: str | os.PathLike[str]) -> str:
    """The file's text (YAML or JSON): at most MAX_BYTES, UTF-8 (UserFileError otherwise)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise UserFileError(str(path), f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise UserFileError(str(path), f"larger than {MAX_BYTES // 1024} KiB; not a config file?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserFileError(str(path), f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def load_yaml_file(path: str | os.PathLike[str]) -> Any:
    """A user's YAML file as Python values; every refusal is a UserFileError naming the file."""
    return parse_yaml(read_user_text(path), str(path))


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise ValueError(f"{key}: duplicate key; a JSON object keeps only the last")
        mapping[key] = value
    return mapping


def parse_json(text: str, source: str = "<json>") -> Any:
    """``text`` as Python values, refusing duplicate keys and oversized text (UserFileError)."""
    if len(text) > MAX_BYTES:
        raise UserFileError(source, f"larger than {MAX_BYTES // 1024} KiB")
    with _refusals(source, json.JSONDecodeError, "JSON"):
        return json.loads(text, object_pairs_hook=_refuse_duplicate_keys)


def load_json_file(path: str | os.PathLike[str]) -> Any:
    """A user's JSON file as Python values; every refusal is a UserFileError naming the file."""
    return parse_json(read_user_text(path), str(path))
