"""Refusal: an input spinejax will not use, with a reason code and a message in spinejax's own words.

The code is a stable identifier (docs/ingestion.md lists them); the message holds numbers and
spinejax's words only, never a path, an identifier, a header or cell value or an exception's text, so both
may go into de-identified outputs such as failures.csv.
"""

from __future__ import annotations


class Refusal(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
