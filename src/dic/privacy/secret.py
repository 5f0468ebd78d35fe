"""The site's disclosure secret: the HMAC key that seeds every perturbation.

    site_secret(folder) -> bytes    `folder/disclosure.key`, 32 random bytes, created on first use

Whoever holds it can recompute the noise and so undo it: it stays on the site, readable by its
owner only (a file that group or others may read, write or execute is refused, not repaired).
Replacing it changes every released number once, which lets anyone who saw both answers average
two draws; keep it for the repository's lifetime.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from dic.errors import ConfigError

SECRET_NAME = "disclosure.key"
SECRET_BYTES = 32


def site_secret(folder: Path) -> bytes:
    path = folder / SECRET_NAME
    if not path.exists():
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it between our check and now: read theirs
        else:
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(secrets.token_bytes(SECRET_BYTES))
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: must be readable by its owner only (chmod 600)")
    secret = path.read_bytes()
    if len(secret) < SECRET_BYTES:
        raise ConfigError(f"{path}: a disclosure secret needs {SECRET_BYTES} bytes, found {len(secret)}")
    return secret
