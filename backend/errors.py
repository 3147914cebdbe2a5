"""Errors that carry a message meant for the user.

A ``UserError`` says what is wrong with the input or request and what to do about it. The
CLI prints it as one line and exits with status 2; the server maps it to a 4xx response.
"""


class UserError(Exception):
    """Bad input, unknown model, unreadable file: anything the user can fix."""


class UnknownCheckpointError(UserError):
    """A checkpoint whose tensor names and shapes match no known architecture."""


def run_command(command, args):
    """Run ``command(args)`` for a CLI: a UserError becomes one ``error: ...`` line on stderr
    and exit status 2, Ctrl-C status 130, anything else a traceback (a bug). Returns 0 on
    success."""
    import sys

    try:
        command(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


class LimitError(UserError):
    """A request over one of the limits (``backend.engine.request.Limits``); the server
    answers 413."""


class Cancelled(Exception):
    """Raised inside a reconstruction when the caller asked to stop (``should_stop``); no
    mesh is produced. Every long loop (MISE batches, refinement, normals, tiles) checks."""
