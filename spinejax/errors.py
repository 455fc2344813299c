"""Expected errors: what a user can fix, said in one line, without a traceback.

Library code raises `InputError` for a problem with what the user gave (a missing file, a table that
cannot be parsed, an output folder spinejax does not own). Command-line programs wrap their main with
`one_line_errors`, which prints `error: <message>` on stderr and exits 2. Anything else is a bug and keeps
its traceback. `SPINEJAX_DEBUG=1` shows the traceback of expected errors too.
"""

from __future__ import annotations

import functools
import os
import sys

DEBUG_ENV = "SPINEJAX_DEBUG"


class InputError(Exception):
    """A problem with the user's input or folders; the message says what was found and what to do."""


def one_line_errors(main):
    """`main` (absl's main(argv)) printing InputError as one line and exiting 2."""

    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except InputError as error:
            if os.environ.get(DEBUG_ENV):
                raise
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapped
