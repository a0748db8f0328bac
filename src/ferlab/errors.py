"""Errors that describe a user mistake.  The CLI prints them as one line and exits 2."""


class FerlabError(Exception):
    """A user-facing error: bad input, missing file, unknown name.  Never shown with a traceback."""


class DataError(FerlabError, ValueError):
    """A dataset file or folder that cannot be read as asked (names the file and row or path)."""
