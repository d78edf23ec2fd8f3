"""The console's own store: one account per person and their server-side sessions, nothing of
any case. SQLite by default, PostgreSQL when given a URL.

Passwords are hashed with argon2id; each account's ledger token and TOTP secret are sealed at
rest with the console's own key (XChaCha20-Poly1305, bound to the account id); a session id
is stored only as its hash, so the store leaks no working session."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ledger.console.store import Database
from ledger.contract import crypto

# The roles a person's ledger token can have: agency staff, or (in the coordinating body's
# console, run with no agency key) a monitor, who sees the statistics releases only.
ROLES = ("caseworker", "supervisor", "monitor")
MIN_PASSWORD = 12  # characters: a passphrase, not a PIN
CONFIRMED_S = 5 * 60  # how long a confirmation (password and code again) lasts
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS console_accounts (id TEXT PRIMARY KEY,"
    " username TEXT UNIQUE NOT NULL, display_name TEXT NOT NULL, role TEXT NOT NULL,"
    " password_hash TEXT NOT NULL, totp_sealed TEXT, token_sealed TEXT NOT NULL,"
    " language TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,"
    " must_change INTEGER NOT NULL DEFAULT 0, totp_step BIGINT, totp_pending TEXT,"
    " failed INTEGER NOT NULL DEFAULT 0, locked_until DOUBLE PRECISION,"
    " created_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS console_sessions (id_hash TEXT PRIMARY KEY,"
    " account_id TEXT NOT NULL, csrf TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,"
    " last_seen DOUBLE PRECISION NOT NULL, confirmed_at DOUBLE PRECISION)",
)
_HASHER = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified when a username is unknown, so an unknown name costs what a wrong password costs.
_DUMMY = _HASHER.hash(secrets.token_urlsafe(16))


class AccountError(Exception):
    """A refusal the console shows in plain words (`message`); never names a secret."""

    def __init__(self, message: str, **params: Any) -> None:
        super().__init__(message)
        self.message, self.params = message, params


@dataclass(frozen=True)
class Account:
    id: str
    username: str
    display_name: str
    role: str
    language: str
    disabled: bool
    has_totp: bool
    must_change: bool = False  # a first or reset password: changed before anything else


@dataclass(frozen=True)
class Session:
    account: Account
    csrf: str
    created_at: float
    last_seen: float
    confirmed_at: float | None = None  # the owner confirmed again (password, code) then

    def confirmed(self, now: float, within_s: float = CONFIRMED_S) -> bool:
        """Whether the owner confirmed it was them recently (managing others' accounts)."""
        return self.confirmed_at is not None and now - self.confirmed_at <= within_s


@dataclass(frozen=True)
class Policy:
    idle_s: float = 15 * 60  # shared computers: a session left alone ends soon
    absolute_s: float = 8 * 3600  # a working day, whatever the activity
    max_failures: int = 5  # failed logins in a row before the account locks
    lockout_s: float = 15 * 60


def _hash_id(session_id: str) -> str:
    return hashlib.sha256(b"console-session-v1\n" + session_id.encode()).hexdigest()


class Accounts:
    """Accounts, logins and sessions of one agency's console."""

    def __init__(
        self,
        key: bytes,
        path: Path,
        url: str | None = None,
        policy: Policy | None = None,
        clock: Any = time.time,
    ) -> None:
        self._key, self.policy, self.clock = key, policy or Policy(), clock
        self.db = Database(url, path)
        with self.db.cursor() as cur:
            for statement in SCHEMA:
                cur.execute(statement)

    def close(self) -> None:
        self.db.close()

    # -- sealing -------------------------------------------------------------------------------

    def _seal(self, account_id: str, what: str, value: str) -> str:
        associated = f"console-{what}-v1\n{account_id}".encode()
        return crypto.b64(crypto.seal(self._key, value.encode(), associated))

    def _unseal(self, account_id: str, what: str, sealed: str) -> str:
        associated = f"console-{what}-v1\n{account_id}".encode()
        return crypto.unseal(self._key, crypto.b64decode_strict(sealed), associated).decode()

    # -- accounts ------------------------------------------------------------------------------

    @staticmethod
    def _account(row: dict[str, Any]) -> Account:
        return Account(
            row["id"],
            row["username"],
            row["display_name"],
            row["role"],
            row["language"],
            bool(row["disabled"]),
            row["totp_sealed"] is not None,
            bool(row["must_change"]),
        )

    def create(
        self,
        username: str,
        display_name: str,
        role: str,
        password: str,
        ledger_token: str,
        language: str = "es",
        *,
        must_change: bool = False,
    ) -> tuple[Account, str | None]:
        """A new account bound to the person's own ledger token; returns it and, for a
        supervisor (a second factor is required), the TOTP secret to enrol once."""
        if role not in ROLES:
            raise AccountError(f"role must be one of: {', '.join(ROLES)}")
        username = username.strip().lower()
        if not username or len(username) > 64 or not username.replace(".", "").isalnum():
            raise AccountError("a username is letters, digits and dots, up to 64")
        check_password(password)
        account_id = str(uuid.uuid4())
        secret = pyotp.random_base32() if role == "supervisor" else None
        try:
            with self.db.cursor() as cur:
                cur.execute(
                    "INSERT INTO console_accounts (id, username, display_name, role,"
                    " password_hash, totp_sealed, token_sealed, language, created_at, must_change)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        account_id,
                        username,
                        display_name,
                        role,
                        _HASHER.hash(password),
                        None if secret is None else self._seal(account_id, "totp", secret),
                        self._seal(account_id, "token", ledger_token),
                        language,
                        self.clock(),
                        int(must_change),
                    ),
                )
        except Exception as exc:
            if "unique" in str(exc).lower() or "duplicate" in str(exc).lower():
                raise AccountError("this username is taken") from None
            raise
        found = self.get(account_id)
        assert found is not None
        return found, secret

    def get(self, account_id: str) -> Account | None:
        with self.db.cursor() as cur:
            cur.execute("SELECT * FROM console_accounts WHERE id = ?", (account_id,))
            row = cur.fetchone()
        return None if row is None else self._account(row)

    def list(self) -> list[Account]:
        with self.db.cursor() as cur:
            cur.execute("SELECT * FROM console_accounts ORDER BY username")
            return [self._account(r) for r in cur.fetchall()]

    def ledger_token(self, account: Account) -> str:
        with self.db.cursor() as cur:
            cur.execute("SELECT token_sealed FROM console_accounts WHERE id = ?", (account.id,))
            row = cur.fetchone()
        return self._unseal(account.id, "token", row["token_sealed"])

    def set_token(self, account_id: str, ledger_token: str) -> None:
        """Bind the account to a new ledger token (the old one was revoked)."""
        with self.db.cursor() as cur:
            cur.execute(
                "UPDATE console_accounts SET token_sealed = ? WHERE id = ?",
                (self._seal(account_id, "token", ledger_token), account_id),
            )

    def set_disabled(self, account_id: str, disabled: bool) -> None:
        """Disable (or enable) an account; disabling ends its sessions at once."""
        with self.db.cursor() as cur:
            cur.execute(
                "UPDATE console_accounts SET disabled = ? WHERE id = ?",
                (int(disabled), account_id),
            )
            if disabled:
                cur.execute("DELETE FROM console_sessions WHERE account_id = ?", (account_id,))

    def set_language(self, account_id: str, language: str) -> None:
        with self.db.cursor() as cur:
            cur.execute(
                "UPDATE console_accounts SET language = ? WHERE id = ?", (language, account_id)
            )

    def reset_password(self, account_id: str, password: str) -> None:
        """A new password, to be changed at the next login, the lock lifted and every session
        of the account ended."""
        check_password(password)
        with self.db.cursor() as cur:
            cur.execute(
                "UPDATE console_accounts SET password_hash = ?, failed = 0, locked_until = NULL,"
                " must_change = 1 WHERE id = ?",
                (_HASHER.hash(password), account_id),
            )
            cur.execute("DELETE FROM console_sessions WHERE account_id = ?", (account_id,))

    # -- logins and sessions -------------------------------------------------------------------

    def login(
        self, username: str, password: str, code: str | None, replacing: str | None = None
    ) -> tuple[str, Session]:
        """A new session (its id, to be set as the cookie, and the session) for the right
        password and, where the account has one, a TOTP code not used before. `replacing`:
        the browser's previous session, ended here (a shared computer's last user).

        Each attempt is counted before the password is checked, in one statement, so
        concurrent guesses cannot read the same count: past `max_failures` the account
        locks. Every refusal but the lock says the same words, and costs one argon2 check."""
        self.logout(replacing)
        now = self.clock()
        wrong = AccountError("the username, the password or the code is wrong")
        with self.db.cursor() as cur:
            cur.execute(
                "UPDATE console_accounts SET failed = failed + 1 WHERE username = ?"
                " AND (locked_until IS NULL OR locked_until <= ?) RETURNING *",
                (username.strip().lower(), now),
            )
            row = cur.fetchone()
            if row is None:  # unknown, or locked
                cur.execute(
                    "SELECT locked_until FROM console_accounts WHERE username = ?",
                    (username.strip().lower(),),
                )
                locked = cur.fetchone()
        if row is None:
            _verify(_DUMMY, password)
            if locked is None:
                raise wrong
            minutes = max(1, round((locked["locked_until"] - now) / 60))
            raise AccountError(
                "too many failed attempts: the account is locked for {minutes} more minutes,"
                " or until a supervisor resets it",
                minutes=minutes,
            )
        if row["failed"] > self.policy.max_failures:  # concurrent attempts used them up
            _verify(_DUMMY, password)
            self._lock(row["id"], now)
            raise wrong
        ok = _verify(row["password_hash"], password)
        step = None
        if ok and row["totp_sealed"] is not None:
            secret = self._unseal(row["id"], "totp", row["totp_sealed"])
            step = _totp_step(secret, code, now)
            ok = step is not None and step > (row["totp_step"] or -1)  # never the same code twice
        if not ok:
            if row["failed"] >= self.policy.max_failures:
                self._lock(row["id"], now)
            raise wrong
        if row["disabled"]:  # said only to whoever knows the password
            raise AccountError("this account is disabled; ask a supervisor of your agency")
        session_id = secrets.token_urlsafe(32)  # a new id at every login: no fixation
        csrf = secrets.token_urlsafe(32)
        with self.db.cursor() as cur:
            cur.execute(
                "UPDATE console_accounts SET failed = 0, locked_until = NULL,"
                " totp_step = COALESCE(?, totp_step) WHERE id = ?",
                (step, row["id"]),
            )
            cur.execute(
                "INSERT INTO console_sessions (id_hash, account_id, csrf, created_at, last_seen)"
                " VALUES (?, ?, ?, ?, ?)",
                (_hash_id(session_id), row["id"], csrf, now, now),
            )
        return session_id, Session(self._account(row), csrf, now, now)

    def _lock(self, account_id: str, now: float) -> None:
        with self.db.cursor() as cur:
            cur.execute(
                "UPDATE console_accounts SET failed = 0, locked_until = ? WHERE id = ?",
                (now + self.policy.lockout_s, account_id),
            )

    def start_totp(self, account_id: str) -> str:
        """A new TOTP secret for the person to enrol; it counts once confirmed with a code."""
        secret = pyotp.random_base32()
        with self.db.cursor() as cur:
            cur.execute(
                "UPDATE console_accounts SET totp_pending = ? WHERE id = ?",
                (self._seal(account_id, "totp-pending", secret), account_id),
            )
        return secret

    def confirm_totp(self, account_id: str, code: str) -> None:
        """The enrolled app's first code: from now on this account logs in with a code."""
        with self.db.cursor() as cur:
            cur.execute("SELECT totp_pending FROM console_accounts WHERE id = ?", (account_id,))
            row = cur.fetchone()
        if row is None or row["totp_pending"] is None:
            raise AccountError("start the enrolment again")
        secret = self._unseal(account_id, "totp-pending", row["totp_pending"])
        step = _totp_step(secret, code, self.clock())
        if step is None:
            raise AccountError("the code is wrong; check the app's clock and try again")
        with self.db.cursor() as cur:
            cur.execute(
                "UPDATE console_accounts SET totp_sealed = ?, totp_pending = NULL, totp_step = ?"
                " WHERE id = ?",
                (self._seal(account_id, "totp", secret), step, account_id),
            )

    def confirm_person(
        self, session_id: str | None, account_id: str, password: str, code: str | None
    ) -> None:
        """The person at the keyboard is the account's owner: their password again and, if
        they have one, a TOTP code not used before; the session counts as confirmed for
        `CONFIRMED_S` (managing others' accounts)."""
        with self.db.cursor() as cur:
            cur.execute("SELECT * FROM console_accounts WHERE id = ?", (account_id,))
            row = cur.fetchone()
        ok = row is not None and _verify(row["password_hash"], password)
        step = None
        if ok and row["totp_sealed"] is not None:
            secret = self._unseal(row["id"], "totp", row["totp_sealed"])
            step = _totp_step(secret, code, self.clock())
            ok = step is not None and step > (row["totp_step"] or -1)
        if not ok:
            raise AccountError("confirm with your own password and code")
        with self.db.cursor() as cur:
            if step is not None:
                cur.execute(
                    "UPDATE console_accounts SET totp_step = ? WHERE id = ?", (step, account_id)
                )
            cur.execute(
                "UPDATE console_sessions SET confirmed_at = ? WHERE id_hash = ?",
                (self.clock(), _hash_id(session_id or "")),
            )

    def use_code(self, account_id: str, code: str | None) -> None:
        """A current TOTP code of the account, never used before, given at the moment of an
        irreversible act (an erasure): used up in one statement, so it is never accepted
        twice, even by two requests at once. A wrong code counts as a failed login does:
        at `max_failures` in a row the account locks and its sessions end. AccountError
        says which it was."""
        now = self.clock()
        with self.db.cursor() as cur:
            cur.execute("SELECT totp_sealed FROM console_accounts WHERE id = ?", (account_id,))
            row = cur.fetchone()
        if row is None or row["totp_sealed"] is None:
            raise AccountError("add a second factor to your account first (Second factor)")
        step = _totp_step(self._unseal(account_id, "totp", row["totp_sealed"]), code, now)
        used = locked = False
        with self.db.cursor() as cur:  # raised after it: a refusal inside would roll back
            if step is not None:
                cur.execute(
                    "UPDATE console_accounts SET totp_step = ?, failed = 0 WHERE id = ?"
                    " AND (totp_step IS NULL OR totp_step < ?) RETURNING id",
                    (step, account_id, step),
                )
                used = cur.fetchone() is None
            else:
                cur.execute(
                    "UPDATE console_accounts SET failed = failed + 1 WHERE id = ? RETURNING failed",
                    (account_id,),
                )
                locked = cur.fetchone()["failed"] >= self.policy.max_failures
                if locked:
                    cur.execute(
                        "UPDATE console_accounts SET failed = 0, locked_until = ? WHERE id = ?",
                        (now + self.policy.lockout_s, account_id),
                    )
                    cur.execute("DELETE FROM console_sessions WHERE account_id = ?", (account_id,))
        if step is not None:
            if used:
                raise AccountError("this code was used already: wait for the next one in your app")
            return
        if locked:
            minutes = round(self.policy.lockout_s / 60)
            raise AccountError(
                "too many wrong codes: the account is locked for {minutes} minutes",
                minutes=minutes,
            )
        raise AccountError("the code is wrong: give the one your app shows now")

    def change_password(self, account_id: str, current: str, new: str) -> None:
        """The person's own change (required after a first or reset password)."""
        check_password(new)
        with self.db.cursor() as cur:
            cur.execute("SELECT password_hash FROM console_accounts WHERE id = ?", (account_id,))
            row = cur.fetchone()
        if row is None or not _verify(row["password_hash"], current):
            raise AccountError("the current password is wrong")
        if current == new:
            raise AccountError("choose a password you have not used here")
        with self.db.cursor() as cur:
            cur.execute(
                "UPDATE console_accounts SET password_hash = ?, must_change = 0 WHERE id = ?",
                (_HASHER.hash(new), account_id),
            )

    def session(self, session_id: str | None) -> Session | None:
        """The live session with this id, its idle time restarted; None if there is none, or
        it passed its idle or absolute timeout (then it is deleted), or its account was
        disabled."""
        if not session_id:
            return None
        now, key = self.clock(), _hash_id(session_id)
        with self.db.cursor() as cur:
            cur.execute(
                "SELECT s.csrf, s.created_at, s.last_seen, s.confirmed_at, a.*"
                " FROM console_sessions s JOIN console_accounts a ON a.id = s.account_id"
                " WHERE s.id_hash = ?",
                (key,),
            )
            row = cur.fetchone()
            if row is None:
                return None
            expired = (
                now - row["last_seen"] > self.policy.idle_s
                or now - row["created_at"] > self.policy.absolute_s
                or row["disabled"]
            )
            if expired:
                cur.execute("DELETE FROM console_sessions WHERE id_hash = ?", (key,))
                return None
            cur.execute("UPDATE console_sessions SET last_seen = ? WHERE id_hash = ?", (now, key))
        return Session(self._account(row), row["csrf"], row["created_at"], now, row["confirmed_at"])

    def logout(self, session_id: str | None) -> None:
        if session_id:
            with self.db.cursor() as cur:
                cur.execute(
                    "DELETE FROM console_sessions WHERE id_hash = ?", (_hash_id(session_id),)
                )


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError("a password has at least {length} characters", length=MIN_PASSWORD)


def csrf_matches(session: Session, sent: object) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), str(sent).encode())


def _totp_step(secret: str, code: str | None, now: float) -> int | None:
    """The 30-second step whose code this is (the current one or a neighbour), or None."""
    if not code or not str(code).strip().isdigit():
        return None
    totp, step = pyotp.TOTP(secret), int(now // 30)
    for candidate in (step - 1, step, step + 1):
        if hmac.compare_digest(totp.at(candidate * 30), str(code).strip()):
            return candidate
    return None


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
