"""Errors that reach the user as one clear line."""
from __future__ import annotations


class TestbedError(Exception):
    """Base class of every error testbed reports to a user."""


class ConfigError(TestbedError):
    """A config (file, key or value) is wrong. ``str()`` is one line: ``file: key: what``."""

    def __init__(self, message: str, *, key: str | None = None, file: str | None = None):
        self.message = message
        self.key = key
        self.file = file
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [printable(p) for p in (self.file, self.key) if p]
        return ": ".join(parts + [one_line(self.message)])

    def with_file(self, file: str) -> "ConfigError":
        """The same error, naming the file it came from (if not named yet)."""
        if self.file:
            return self
        return ConfigError(self.message, key=self.key, file=file)

    def with_key(self, key: str) -> "ConfigError":
        """The same error, naming the key (prefixing a key already named)."""
        if self.key and self.key != key and not self.key.startswith(key + "."):
            key = f"{key}.{self.key}"
        elif self.key:
            key = self.key
        return ConfigError(self.message, key=key, file=self.file)


def printable(name: str) -> str:
    """A file name or key as given, or its ``repr`` if it holds a newline or another control character."""
    return name if name.isprintable() else repr(name)


#: the characters ``str.splitlines`` breaks at
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def one_line(text: str) -> str:
    """``text`` with line breaks escaped as in a ``repr`` (``\\n``), so an error stays one line."""
    if not any(c in text for c in LINE_BREAKS):
        return text
    return "".join(repr(c)[1:-1] if c in LINE_BREAKS else c for c in text)
