"""The `ledger` command's exit codes, and the failure a command raises to end with one."""

from __future__ import annotations

OK, FAILED, BAD_INPUT, UNREACHABLE, REFUSED, NO_DEPLOYMENT, ROLLED_BACK = 0, 1, 2, 3, 4, 5, 6
INTERNAL = 70

EXIT_CODES = (
    "Exit codes: 0 done (or verified); 1 a verification failed (audit verify, receipt verify);"
    " 2 bad input: an option, a file that cannot be read, a key, a URL;"
    " 3 the ledger, its database or a program it needs (pg_dump) cannot be reached;"
    " 4 the ledger refused the request (its answer is shown);"
    " 5 no deployment here (the settings to give are shown);"
    " 6 the log here is a rollback of a checkpoint already signed, not served until accepted"
    " (ledger restore --accept-rollback);"
    " 70 an internal error (a bug: LEDGER_DEBUG=1 shows its traceback)."
)


class CommandError(Exception):
    """A failure the user can act on: `message` says what to do; `code` is the exit code."""

    def __init__(self, message: str, code: int = BAD_INPUT) -> None:
        super().__init__(message)
        self.message, self.code = message, code
