"""Rows store library messages as plain text, without terminal escape sequences or control characters."""

from __future__ import annotations

import re

from workers.row import Row

#: Terminal escape sequences (colours, cursor moves, OSC titles and links) and the other control
#: characters a library may put in its messages (torch.export colours its errors): not text a table,
#: a report or a Parquet reader can show.
_ESCAPES = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


#: The text columns that carry messages from libraries: stored without escape sequences.
MESSAGE_COLUMNS = ("error", "profile_error", "traceback")


def plain_text(text: str) -> str:
    """``text`` without terminal escape sequences and control characters (newlines and tabs stay)."""
    return _ESCAPES.sub("", text)


def strip_escapes(row: Row) -> Row:
    """``row`` with its message columns (and its ``invalid_reasons``) as plain text; changed in place."""
    for col in MESSAGE_COLUMNS:
        if isinstance(row.get(col), str):
            row[col] = plain_text(row[col])
    if isinstance(row.get("invalid_reasons"), list):
        row["invalid_reasons"] = [plain_text(r) if isinstance(r, str) else r for r in row["invalid_reasons"]]
    return row
