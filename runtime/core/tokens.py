"""API bearer tokens: creation, lookup, scopes and revocation, on SQLite.

A token reads ``ra_<id>_<secret>``: ``id`` is 12 public hex characters that
name the token in listings, logs and ``tokens revoke``; ``secret`` is 256
random bits. The database keeps only sha256 of the whole token string, never
the secret. A salted slow hash (bcrypt, scrypt) protects low-entropy
passwords against offline guessing; a 256-bit random secret cannot be
guessed, so one sha256 is enough and keeps a lookup in the microseconds.

The table lives in the agent's ``registry.db`` next to the functions, through
a connection of this module's own (WAL, busy timeout), so that
``runtime-agent tokens ...`` can add or revoke tokens while the agent runs.
The agent looks a token up in SQLite when it is not in a small in-process
cache whose entries live at most ``cache_ttl`` seconds (1 s by default): a new
token works at once and a revoked one stops working within that time.

Scopes: ``invoke`` (Invoker, Logs, ListRuntimes) and ``admin`` (everything,
including invoke). The API layer decides which method needs which scope.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from pathlib import Path

from runtime.errors import InvalidParameterValue, PermissionDenied, ResourceNotFound, ServiceError, Unauthenticated

SCOPES = ("invoke", "admin")
# What each granted scope allows: admin is a superset of invoke.
_IMPLIED = {"invoke": frozenset({"invoke"}), "admin": frozenset({"invoke", "admin"})}

PREFIX = "ra"
_ID_BYTES = 6          # 12 hex characters: short enough to read, unique enough per host
_SECRET_BYTES = 32     # 256 bits
_TOKEN_RE = re.compile(r"ra_([0-9a-f]{12})_([0-9a-f]{64})")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@:/-]{0,63}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,             -- public part of the token, shown by `tokens list`
    hash TEXT NOT NULL UNIQUE,       -- sha256 hex of the whole token string
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,            -- space-separated, from SCOPES
    created REAL NOT NULL,           -- Unix seconds
    revoked INTEGER NOT NULL DEFAULT 0,
    revoked_at REAL
);
"""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def parse_token(token: str) -> str | None:
    """The public id of a well-formed token, or None."""
    m = _TOKEN_RE.fullmatch(token)
    return m.group(1) if m else None


def expand_scopes(scopes) -> frozenset[str]:
    out: set[str] = set()
    for s in scopes:
        out |= _IMPLIED.get(s, frozenset())
    return frozenset(out)


@dataclasses.dataclass(frozen=True)
class TokenInfo:
    """One token as listed: everything except the secret, which is not stored."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created: float
    revoked: bool = False
    revoked_at: float | None = None
    # Every scope the token grants, implied ones included; computed once
    # because `allows` runs on every call.
    granted: frozenset[str] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "granted", frozenset() if self.revoked else expand_scopes(self.scopes))

    def allows(self, required: str) -> bool:
        return required in self.granted

    def require(self, required: str, what: str) -> None:
        if not self.allows(required):
            raise PermissionDenied(f"this token lacks the '{required}' scope required by {what}")

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "scopes": list(self.scopes), "created": self.created,
                "revoked": self.revoked, "revoked_at": self.revoked_at}


class AuthFailure(Unauthenticated):
    """Unauthenticated with the operator-facing reason kept apart from the
    client-facing message: a client learns only that its token was refused,
    the agent's log says why (unknown id, wrong secret, revoked)."""

    def __init__(self, reason: str, token_id: str | None = None, message: str | None = None):
        super().__init__(message or "invalid or revoked bearer token")
        self.reason = reason
        self.token_id = token_id


class TokenStore:
    def __init__(self, path: Path, cache_ttl: float = 1.0):
        self.path = Path(path)
        self.cache_ttl = cache_ttl
        # sha256 hex -> (TokenInfo, monotonic expiry). Only tokens that were
        # valid are cached, so the cache never grows past the table's size
        # however many bad tokens clients send.
        self._cache: dict[str, tuple[TokenInfo, float]] = {}
        # grpc.aio does not promise interceptors run on one thread; the lock
        # serialises use of the one connection (uncontended: ~0.1 µs).
        self._lock = threading.Lock()
        try:
            self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            # The agent's Store and `runtime-agent tokens` write the same file.
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise self._error("sqlite3.connect/CREATE TABLE tokens", exc) from exc

    def close(self) -> None:
        self.db.close()

    def _error(self, call: str, exc: sqlite3.Error) -> ServiceError:
        return ServiceError(f"{call} on {self.path} failed: {exc}")

    def _query(self, call: str, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            with self._lock:
                return self.db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(call, exc) from exc

    @staticmethod
    def _row(row: tuple) -> TokenInfo:
        tid, name, scopes, created, revoked, revoked_at = row
        return TokenInfo(tid, name, tuple(scopes.split()), created, bool(revoked), revoked_at)

    # --- management (runtime-agent tokens ...) ---------------------------------

    def create(self, name: str, scopes) -> tuple[TokenInfo, str]:
        """Returns the stored record and the token; the token exists nowhere else."""
        scopes = tuple(sorted(set(scopes)))
        if not scopes or any(s not in SCOPES for s in scopes):
            raise InvalidParameterValue("scope", f"{' '.join(scopes) or 'none'}: use one of {', '.join(SCOPES)}")
        if not _NAME_RE.fullmatch(name or ""):
            raise InvalidParameterValue(
                "name", "1-64 characters of letters, digits, space and ._@:/-, starting with a letter or digit")
        for _ in range(5):  # an id collision among 2^48 is unlikely; retry rather than fail
            tid = secrets.token_hex(_ID_BYTES)
            token = f"{PREFIX}_{tid}_{secrets.token_hex(_SECRET_BYTES)}"
            info = TokenInfo(tid, name, scopes, time.time())
            try:
                with self._lock:
                    self.db.execute("INSERT INTO tokens (id, hash, name, scopes, created) VALUES (?, ?, ?, ?, ?)",
                                    (tid, hash_token(token), name, " ".join(scopes), info.created))
                return info, token
            except sqlite3.IntegrityError:
                continue
            except sqlite3.Error as exc:
                raise self._error("INSERT INTO tokens", exc) from exc
        raise ServiceError(f"INSERT INTO tokens on {self.path} failed: no free token id after 5 attempts")

    def list(self) -> list[TokenInfo]:
        rows = self._query("SELECT FROM tokens", "SELECT id, name, scopes, created, revoked, revoked_at "
                           "FROM tokens ORDER BY created, id")
        return [self._row(r) for r in rows]

    def get(self, token_id: str) -> TokenInfo:
        rows = self._query("SELECT FROM tokens", "SELECT id, name, scopes, created, revoked, revoked_at "
                           "FROM tokens WHERE id=?", (token_id,))
        if not rows:
            raise ResourceNotFound(f"token {token_id} does not exist")
        return self._row(rows[0])

    def revoke(self, token_id: str) -> TokenInfo:
        """Marks the token revoked (kept for the listing); idempotent."""
        token_id = token_id.strip()
        if token_id.startswith(f"{PREFIX}_"):  # accept "ra_<id>" as `tokens list` shows it
            token_id = token_id.split("_")[1]
        self._query("UPDATE tokens", "UPDATE tokens SET revoked=1, revoked_at=? WHERE id=? AND revoked=0",
                    (time.time(), token_id))
        info = self.get(token_id)
        self._cache = {h: v for h, v in self._cache.items() if v[0].id != token_id}
        return info

    # --- the request path ----------------------------------------------------

    def authenticate(self, token: str) -> TokenInfo:
        """The token's record, or AuthFailure saying why not (for the log)."""
        digest = hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        tid = parse_token(token)
        if tid is None:
            raise AuthFailure("malformed token")
        rows = self._query("SELECT FROM tokens", "SELECT id, name, scopes, created, revoked, revoked_at, hash "
                           "FROM tokens WHERE id=?", (tid,))
        if not rows:
            raise AuthFailure("unknown token id", tid)
        *fields, stored = rows[0]
        # Constant time, so response timing says nothing about how much of a
        # guessed secret was right.
        if not hmac.compare_digest(stored.encode(), digest.encode()):
            raise AuthFailure("wrong secret for token id", tid)
        info = self._row(tuple(fields))
        if info.revoked:
            self._cache.pop(digest, None)
            raise AuthFailure("token revoked", tid)
        if self.cache_ttl > 0:
            if len(self._cache) > 4096:  # drop expired entries now and then
                self._cache = {h: v for h, v in self._cache.items() if v[1] > now}
            self._cache[digest] = (info, now + self.cache_ttl)
        return info
