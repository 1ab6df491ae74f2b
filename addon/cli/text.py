"""Text from the record made safe for the operator's terminal.

Model names, paths, tenants and error messages in the record were chosen by clients. Printed raw, an
escape sequence among them (``ESC ]`` ... retitles the window, ``ESC [2J`` clears it, OSC 52 writes the
clipboard) or a bidi override (which reorders what the eye reads) acts on the terminal of whoever runs
`corral flows`. Every character Python does not call printable is shown as its escape instead.
"""

from __future__ import annotations


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with control, format (bidi, zero-width) and separator characters escaped (``\\x1b``,
    ``\\u202e``); a plain space stays."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)
