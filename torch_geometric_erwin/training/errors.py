"""The error the examples' command line reports as one line: a problem the user can fix."""


class UsageError(Exception):
    """A problem with the command line or the data that the user can fix; printed as one line."""
