"""The one exception type for mistakes a user can fix (bad files, bad options, bad configs).

The command line turns it into one ``error: ...`` line on stderr and exit status 2; anything else is a bug
and keeps its traceback.
"""


class RankdistillError(ValueError):
    """A user-fixable problem. The message names the bad value and what to do about it."""
