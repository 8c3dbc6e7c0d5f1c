"""The one error type of the remote bundle that the runner reports instead of a traceback."""


class UserError(Exception):
    """Something the user can fix: reported as one JSON error line, exit code 2."""
