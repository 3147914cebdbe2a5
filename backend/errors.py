"""Errors that carry a message meant for the user.

A ``UserError`` says what is wrong with the input or request and what to do about it. The
CLI prints it as one line and exits with status 2; the server maps it to a 4xx response.
"""


class UserError(Exception):
    """Bad input, unknown model, unreadable file: anything the user can fix."""


class UnknownCheckpointError(UserError):
    """A checkpoint whose tensor names and shapes match no known architecture."""
