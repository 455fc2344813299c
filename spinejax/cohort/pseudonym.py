"""Pseudonymous keys: the same person or series always maps to the same key, which reveals nothing.

Keys are HMAC-SHA256 of the original identifier under a secret the data owner keeps. Without the secret
no one can tell whose key it is or test a guess; with it the owner can link results back. The secret
comes from --secret_file or the SPINEJAX_SECRET environment variable, is never written to any output,
and must stay the same across stages (records, eligibility, analysis) so their keys agree.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from spinejax.errors import InputError

SECRET_ENV = "SPINEJAX_SECRET"
MIN_SECRET_CHARS = 16
KEY_HEX_CHARS = 24  # 96 bits: no collisions in any real archive


def load_secret(secret_file: str | None = None) -> bytes:
    """The secret from `secret_file` (its stripped text) or else $SPINEJAX_SECRET; refuses short ones."""
    if secret_file:
        path = Path(secret_file)
        if not path.is_file():
            raise InputError(f"secret file {path} does not exist. Make one with `python -c 'import secrets; "
                             f"print(secrets.token_hex(32))' > {path}` and keep it private")
        try:
            secret = path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            raise InputError(f"secret file {path} cannot be read as text") from None
        where = str(path)
    else:
        secret = os.environ.get(SECRET_ENV, "").strip()
        where = f"${SECRET_ENV}"
    if not secret:
        raise InputError(
            f"no secret for pseudonymous keys: pass --secret_file=PATH or set ${SECRET_ENV}. Make one with "
            "`python -c 'import secrets; print(secrets.token_hex(32))' > secret.key` and keep it private.")
    if len(secret) < MIN_SECRET_CHARS:
        raise InputError(f"the secret in {where} is shorter than {MIN_SECRET_CHARS} characters; use a long random one")
    return secret.encode()


def check_secret(secret: bytes) -> None:
    """Refuses (InputError) a secret too short to key anything: keys anyone could recompute."""
    if len(secret or b"") < MIN_SECRET_CHARS:
        raise InputError(f"no usable secret for pseudonymous keys (fewer than {MIN_SECRET_CHARS} characters): pass "
                         "--secret_file=PATH or set $SPINEJAX_SECRET")


def keyed_hash(value: str, secret: bytes, kind: str) -> str:
    """Key of identifier `value` of one `kind` ('subject' or 'series'): 24 hex characters."""
    digest = hmac.new(secret, f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()
    return digest[:KEY_HEX_CHARS]


def secret_fingerprint(secret: bytes) -> str:
    """16 hex characters that tell two secrets apart without revealing either: stages record it, so that
    outputs made under two secrets (whose keys cannot be joined) are never mixed."""
    return keyed_hash("spinejax secret fingerprint", secret, "fingerprint")[:16]


def subject_key(subject_id: str, secret: bytes) -> str:
    return keyed_hash(str(subject_id), secret, "subject")


def series_key(series_id: str, secret: bytes) -> str:
    return keyed_hash(str(series_id), secret, "series")
