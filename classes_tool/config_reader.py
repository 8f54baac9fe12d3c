"""Reading a YAML config, the one reader every target and command uses.

Every failure is one line: a missing file, bytes that are not UTF-8, bad YAML, a key given
twice, aliases that expand past `MAX_YAML_VALUES` (a "billion laughs"), nesting too deep for a
config, a document that is not a mapping. Object tags are refused (safe loading).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from classes_tool.errors import UserError


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key written twice in one mapping is an error: plain
    YAML keeps the last value silently, so a config edited by appending `seed: 2` under an old
    `seed: 1` would run with a seed its author may not have meant."""

    def construct_mapping(self, node, deep=False):
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue  # an unhashable key: the base class reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice (line {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


#: Most values a config may expand to (every alias counted at each place it is used): a file
#: of a few lines can otherwise alias its way to 9**9 values (a "billion laughs").
MAX_YAML_VALUES = 100_000


def _expanded_size(root: yaml.Node, path: Path) -> int:
    """How many values `root` expands to once its aliases are copied in (each shared node
    counted once, by memo; no recursion, so a deep file costs no Python stack)."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        if finished:
            visiting.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_YAML_VALUES:
                raise UserError(f"{path} expands to more than {MAX_YAML_VALUES:,} values "
                                f"(aliases near line {node.start_mark.line + 1}); a config is "
                                "much smaller")
            continue
        if key in visiting:
            raise UserError(f"{path}: an alias refers to the value that contains it (line "
                            f"{node.start_mark.line + 1})")
        visiting.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config as a mapping: keys unique, aliases bounded (`MAX_YAML_VALUES`), the file
    UTF-8 text; every failure is one line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not a text config (not UTF-8 at byte {exc.start})") from None
    try:
        loader = _UniqueKeyLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _expanded_size(node, path)
            raw = None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{path} is not valid YAML: {first}") from None
    except RecursionError:
        raise UserError(f"{path} is nested too deeply to be a config") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the config must be a mapping of keys to values")
    return raw
