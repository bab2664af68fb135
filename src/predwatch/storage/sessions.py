"""Browser sessions: what a signed-in browser's cookie stands for, stored server-side.

A session belongs to the API key that signed it in, so revoking the key ends its sessions too.
Only the SHA-256 digest of a session id is stored (like tokens and keys); a session ends when it
expires, when it is revoked (sign-out), or when its key is revoked. Expired rows are removed
whenever a new session is created, so the table holds only live sessions and those awaiting the
next sign-in.

``SessionQueries`` is mixed into ``SQLStore`` (it uses only the store's ``engine``); the table is
created by migration ``0004_sessions``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Index, String, Table, delete, insert, select
from sqlalchemy.engine import Engine

from predwatch.records import utcnow
from predwatch.storage.engine import WRITE
from predwatch.storage.tables import UTCDateTime, api_keys, metadata

sessions = Table(
    "sessions",
    metadata,
    Column("session_hash", String, primary_key=True),
    Column("key_id", String, ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Index(None, "expires_at"),
)
S, K = sessions.c, api_keys.c


class SessionQueries:
    """The session methods of the ``Store`` protocol, over ``self.engine``."""

    engine: Engine

    def create_session(self, session_hash: str, key_hash: str, *, expires_at: datetime
                       ) -> str | None:
        """Store a session for the (non-revoked) key with digest ``key_hash``; returns the key's
        user, or None (and stores nothing) when the key is unknown or revoked."""
        now = utcnow()
        with self.engine.execution_options(**{WRITE: True}).begin() as conn:
            key = conn.execute(
                select(K.id, K.user_name).where(K.key_hash == key_hash, K.revoked_at.is_(None))
            ).first()
            if key is None:
                return None
            conn.execute(delete(sessions).where(S.expires_at <= now))
            conn.execute(insert(sessions).values(session_hash=session_hash, key_id=key.id,
                                                 created_at=now, expires_at=expires_at))
            return str(key.user_name)

    def user_for_session(self, session_hash: str) -> str | None:
        """The user of a live session: not expired, not revoked, its key not revoked."""
        q = (select(K.user_name).select_from(sessions.join(api_keys, S.key_id == K.id))
             .where(S.session_hash == session_hash, S.expires_at > utcnow(),
                    K.revoked_at.is_(None)))
        with self.engine.connect() as conn:
            user = conn.scalar(q)
        return None if user is None else str(user)

    def revoke_session(self, session_hash: str) -> bool:
        """End a session (sign-out); True when there was one."""
        with self.engine.execution_options(**{WRITE: True}).begin() as conn:
            done = conn.execute(delete(sessions).where(S.session_hash == session_hash))
        return bool(done.rowcount)
