"""The per-user key that signs model index entries, so that an entry naming code is run only if its user wrote it.

A model index entry (``<out>/_models/<name>.json``) is data anyone who can write the results folder can
write, but an entry whose spec is ``package.module:callable`` makes ``equivar run --name`` and the UI
import and call that callable. So :func:`equivar_core.model_index.register` (``equivar models add``,
``equivar run``, the checkpoint sensor, the launchpad's ``add_model`` job) stores an HMAC-SHA256 of the
entry made with a secret key kept outside the results folder, and the index refuses a callable entry whose
signature is missing or does not match.

The key is ``$EQUIVAR_CONFIG/key``, else ``$XDG_CONFIG_HOME/equivar/key``, else ``~/.config/equivar/key``:
64 hex digits, created on first use with mode 0600 in a folder of mode 0700. A key that others can read or
write is refused (they could sign entries with it). Processes that must trust each other's entries (a
shell and the Dagster daemon, the pods of a deployment) share it by pointing ``EQUIVAR_CONFIG`` at the
same folder; tests point it at a temporary one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat

from .errors import EquivarError

CONFIG_ENV = "EQUIVAR_CONFIG"


def config_dir() -> str:
    """The folder of the key: ``$EQUIVAR_CONFIG``, else ``$XDG_CONFIG_HOME/equivar``, else
    ``~/.config/equivar``."""
    if os.environ.get(CONFIG_ENV):
        return os.path.abspath(os.environ[CONFIG_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "equivar")


def key_path() -> str:
    return os.path.join(config_dir(), "key")


def signing_key(create: bool = True) -> bytes:
    """This user's key (created, mode 0600, when ``create`` and there is none); raises :class:`EquivarError`
    when it cannot be read or created, or when others may read or write it."""
    path = key_path()
    if create and not os.path.exists(path):
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
        except FileExistsError:
            pass                                      # another process made it first: use theirs
        except OSError as exc:
            raise EquivarError(f"cannot create the model index signing key {path}: {exc.strerror or exc} "
                               f"(set ${CONFIG_ENV} to a private folder you can write)") from None
    try:
        st = os.stat(path)
        with open(path) as f:
            key = f.read().strip()
    except FileNotFoundError:
        raise EquivarError(f"no model index signing key at {path} (set ${CONFIG_ENV} to the folder of the key "
                           "that signed the entries)") from None
    except OSError as exc:
        raise EquivarError(f"cannot read the model index signing key {path}: {exc.strerror or exc}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise EquivarError(f"the model index signing key {path} is open to other users (mode "
                           f"{stat.S_IMODE(st.st_mode):o}): `chmod 600 {path}`")
    if len(key) < 32:
        raise EquivarError(f"the model index signing key {path} is too short (at least 32 characters)")
    return key.encode()


def sign(payload: bytes, key: bytes) -> str:
    """HMAC-SHA256 of ``payload`` (hex)."""
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def verify(payload: bytes, signature: str | None, key: bytes) -> bool:
    """Whether ``signature`` is :func:`sign` of ``payload`` with ``key`` (compared in constant time)."""
    return isinstance(signature, str) and hmac.compare_digest(sign(payload, key), signature)
