from xai_bench.errors import XaiBenchError


class DataError(XaiBenchError):
    """A data set cannot be loaded; the message names the problem and the fix."""
