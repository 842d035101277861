"""The one exception type for mistakes a user can fix (bad input, bad parameters).

The CLI turns it into a one-paragraph message and exit code 2; anything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """A problem with the user's data, parameters or environment, with how to fix it."""
