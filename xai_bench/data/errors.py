class DataError(Exception):
    """A data set cannot be loaded; the message names the problem and the fix."""
