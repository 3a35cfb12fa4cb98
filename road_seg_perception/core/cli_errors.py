"""How every command-line tool reports a failure: one line naming the bad input, a fixed exit status.

Usage errors (a bad option, a missing or unfit input) exit with :data:`EXIT_USAGE`, runtime
failures with :data:`EXIT_RUNTIME`, Ctrl-C with :data:`EXIT_INTERRUPTED`; the traceback is
printed only when the tool's ``--debug`` flag asks for it.
"""

from __future__ import annotations

import sys
import traceback

EXIT_RUNTIME = 1
EXIT_USAGE = 2
#: 128 + SIGINT, what a shell reports for a command ended by Ctrl-C.
EXIT_INTERRUPTED = 130


def one_line(exc: BaseException) -> str:
    """The message of ``exc``; its type name is added for exceptions that are not the tool's own errors."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]  # str(KeyError) quotes its message
    if type(exc).__module__ == "builtins" and not isinstance(exc, ValueError | KeyError | FileNotFoundError):
        text = f"{type(exc).__name__}: {text}"
    return text


def fail(prog: str, exc: BaseException, status: int, debug: bool = False) -> int:
    """Print ``prog: error: <message>`` (and the traceback if ``debug``) to stderr; return ``status``."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    hint = "" if debug or status != EXIT_RUNTIME else " (run with --debug for the traceback)"
    print(f"{prog}: error: {one_line(exc)}{hint}", file=sys.stderr)
    return status
