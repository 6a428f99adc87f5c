"""Errors the user sees as one line, without a traceback."""

__all__ = ["UserError"]


class UserError(Exception):
    """A problem with the user's request (a missing file, a bad option value, an unwritable
    output), shown as one line without a traceback; the command exits with status 2."""
