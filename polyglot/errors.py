"""Errors that name the bad input and the fix.

Entry points catch `PolyglotError`, print its message on one line and exit
non-zero; library code raises the most specific subclass.
"""


class PolyglotError(Exception):
  """Base class: the message names the input and how to fix it."""


class ConfigError(PolyglotError, ValueError):
  """A configuration value (dataclass field, gin binding, flag) is invalid."""


class DataError(PolyglotError, ValueError):
  """An input file, directory, language code or vocabulary is unusable."""


class CheckpointError(PolyglotError):
  """A checkpoint is missing, partial, or does not fit the request."""


class ConversionError(PolyglotError, ValueError):
  """A model cannot be converted to or from another format."""
