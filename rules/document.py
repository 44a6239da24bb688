"""One rules file as read: its text, its YAML nodes (for line numbers) and its data.

The shipped rules and a user's override are two documents; a merged rule set
keeps pointing back at the one each field came from, so an error or a
`rules show` line names the file and line the person has to look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from expwatch.bounded_yaml import YamlRefused, line_at, node_at, parse_yaml
from expwatch.files import NotReadyYet, read_text
from expwatch.layout import HOME_NAME
from expwatch.trust import check_trusted


class RulesError(Exception):
    """An invalid rules file. ``str()`` is the one-line message."""

    def __init__(self, source: str, line: int | None, message: str):
        where = f"{source}:{line}" if line else source
        # One line even when the message quotes the file (a YAML error shows the offending text).
        super().__init__(f"{where}: {' '.join(message.splitlines())}")
        self.source = source
        self.line = line


@dataclass(frozen=True)
class RulesDocument:
    source: str  # how errors and provenance name the file
    text: str
    root: yaml.Node
    data: Any

    def key_line(self, path: list[Any]) -> int:
        """The line of the key that ends ``path`` (``when:``, not the first line under it)."""
        parent = node_at(self.root, path[:-1])
        if isinstance(parent, yaml.MappingNode):
            for key, _ in parent.value:
                if key.value == path[-1]:
                    return key.start_mark.line + 1
        return line_at(self.root, path) or 0


def read_document(text: str, source: str) -> RulesDocument:
    """Parse with bounds on size, depth and aliases before anything is built (expwatch/bounded_yaml.py)."""
    try:
        document = parse_yaml(text, source)
    except YamlRefused as exc:
        raise RulesError(source, exc.line, exc.message) from None
    if document.data is None:
        raise RulesError(source, None, "the file is empty")
    return RulesDocument(source, text, document.root, document.data)


def read_file(path: Path) -> RulesDocument:
    """A user's rules file: refused unless its owner and mode say it is ours (expwatch/trust.py), bounded in size."""
    try:
        text = read_text(Path(path), lambda p, info: check_trusted(p, info, Path(path).parent / HOME_NAME))
    except UnicodeDecodeError as exc:
        raise RulesError(str(path), None, f"not UTF-8 text ({exc.reason})") from None
    except NotReadyYet as exc:
        raise RulesError(str(path), None, exc.reason) from None
    return read_document(text, str(path))
