"""One exception type for user mistakes.

A `UserError` carries a one-line message meant for a person; the CLI turns it into exit code 2
with no traceback. Anything else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in what the user gave us (a path, a name, a config value), not a bug."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
