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
        parts = [p for p in (self.file, self.key) if p]
        return ": ".join(parts + [self.message])

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
