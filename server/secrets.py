"""Encryption of network credentials at rest: AES-256-GCM with key ids, so keys can be rotated by re-encryption."""

import base64
import hashlib
import os
import pathlib
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_FORMAT_VERSION = b"\x01"
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12


class SecretBox:
    """Seals secrets with the newest key and opens them with any known key (the older ones only until rotated)."""

    def __init__(self, keys: list[bytes], *, reload: Callable[[], list[bytes]] | None = None):
        """`reload` re-reads the keys from where they live when they can change under a running server (the key
        file, which rotate-secret-key rewrites)."""
        self._reload = reload
        self._use(keys)

    def _use(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one secret key is required")
        for key in keys:
            if len(key) != 32:
                raise ValueError("secret keys must be 32 bytes (AES-256)")
        self._keys = {self.key_id(k): AESGCM(k) for k in keys}
        self.primary_key_id = self.key_id(keys[0])

    @staticmethod
    def key_id(key: bytes) -> bytes:
        return hashlib.sha256(key).digest()[:_KEY_ID_BYTES]

    def seal(self, plaintext: str, *, context: str) -> bytes:
        """Encrypts; `context` (such as the config's name) is bound as associated data so a ciphertext
        copied onto another row does not open there."""
        if self._reload is not None:
            # Sealing is rare (a config saved or rotated): re-reading the keys first means a running server seals
            # with the newest key even right after a rotation, never with one about to be retired.
            self._use(self._reload())
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self.primary_key_id].encrypt(nonce, plaintext.encode(), context.encode())
        return _FORMAT_VERSION + self.primary_key_id + nonce + sealed

    def open(self, ciphertext: bytes, *, context: str) -> str:
        if ciphertext[:1] != _FORMAT_VERSION:
            raise ValueError("unknown secret format")
        key_id = ciphertext[1 : 1 + _KEY_ID_BYTES]
        nonce = ciphertext[1 + _KEY_ID_BYTES : 1 + _KEY_ID_BYTES + _NONCE_BYTES]
        aead = self._keys.get(key_id)
        if aead is None and self._reload is not None:
            self._use(self._reload())  # re-sealed by a rotation since this server read its keys
            aead = self._keys.get(key_id)
        if aead is None:
            raise ValueError("secret sealed with a key that is not configured")
        return aead.decrypt(nonce, ciphertext[1 + _KEY_ID_BYTES + _NONCE_BYTES :], context.encode()).decode()

    def is_current(self, ciphertext: bytes) -> bool:
        return ciphertext[1 : 1 + _KEY_ID_BYTES] == self.primary_key_id


def parse_keys(text: str) -> list[bytes]:
    return [base64.b64decode(part.strip()) for part in text.split(",") if part.strip()]


def encode_keys(keys: list[bytes]) -> str:
    return ",".join(base64.b64encode(k).decode() for k in keys) + "\n"


def new_secret_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def key_file(data_dir: str) -> pathlib.Path:
    return pathlib.Path(data_dir) / "secret.key"


def load_or_create_keys(configured: str, data_dir: str) -> list[bytes]:
    """Keys from the setting when given; otherwise from <data_dir>/secret.key, created owner-only on first run."""
    if configured:
        return parse_keys(configured)
    path = key_file(data_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(encode_keys([new_secret_key()]))
    return parse_keys(path.read_text())


def open_secret_box(configured: str, data_dir: str) -> SecretBox:
    """Keys from the setting are fixed for the process; keys from the key file are re-read when it changes."""
    keys = load_or_create_keys(configured, data_dir)
    if configured:
        return SecretBox(keys)
    path = key_file(data_dir)
    return SecretBox(keys, reload=lambda: parse_keys(path.read_text()))


def read_private_file(path: pathlib.Path) -> str | None:
    """The file's text, trimmed; None when there is no such file."""
    return path.read_text().strip() if path.exists() else None


def write_private_file(path: pathlib.Path, text: str) -> None:
    """Replaces a file atomically with owner-only permissions: a reader sees the old content or the new, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)  # O_EXCL below: a leftover must not lend the new file its permissions
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def token_hint(token: str) -> str:
    """What a response may show of a token: its last four characters, and nothing for a short one."""
    return "…" + token[-4:] if len(token) >= 12 else "…"
