"""The trust center's secret keys, in their own file beside (never inside) its database.

    {"current": 2, "keys": {"1": "<base64 32 bytes>", "2": "..."}}

New pseudonyms are derived with the current key; rotation adds a key and makes it current.
Old keys stay in the file so every issued pseudonym can still be re-derived and checked,
and the stored pseudonym table keeps the mapping either way. The file is created with mode
0600 and refused if others can read it.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import orjson

from dic.errors import ConfigError

KEY_BYTES = 32


@dataclass(frozen=True)
class KeyRing:
    path: Path
    current: int
    keys: dict[int, bytes]

    @property
    def key(self) -> bytes:
        return self.keys[self.current]

    @classmethod
    def open(cls, path: Path) -> KeyRing:
        """The key file at `path`; a new one with a fresh key if there is none."""
        if not path.exists():
            ring = cls(path, 1, {1: secrets.token_bytes(KEY_BYTES)})
            ring._write()
            return ring
        if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{path}: key file must be readable by its owner only (chmod 600)")
        try:
            raw = orjson.loads(path.read_bytes())
            keys = {int(version): base64.b64decode(text) for version, text in raw["keys"].items()}
            current = int(raw["current"])
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as error:
            raise ConfigError(f"{path}: not a trust-center key file: {error}") from error
        if current not in keys or any(len(k) < KEY_BYTES for k in keys.values()):
            raise ConfigError(f"{path}: current key missing or a key shorter than {KEY_BYTES} bytes")
        return cls(path, current, keys)

    def rotated(self) -> KeyRing:
        """A ring with a new current key (the old ones kept), written to the file."""
        version = max(self.keys) + 1
        ring = KeyRing(self.path, version, {**self.keys, version: secrets.token_bytes(KEY_BYTES)})
        ring._write()
        return ring

    def _write(self) -> None:
        text = orjson.dumps({"current": self.current,
                             "keys": {str(v): base64.b64encode(k).decode() for v, k in sorted(self.keys.items())}})
        temporary = self.path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(text)
        os.replace(temporary, self.path)
