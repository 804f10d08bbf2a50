"""The package version, in a module of its own so that code needing it imports nothing else
(``xai_bench/__init__.py`` re-exports it as ``xai_bench.__version__``)."""

VERSION = "0.1.0"
__version__ = VERSION
