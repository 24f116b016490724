"""Errors a user can cause and fix.

Every mistake that comes from outside the program (a bad file, a bad flag, an
impossible hyperparameter) raises a :class:`DigitnetError` whose message says
what was wrong and what to do. The command line turns it into one
``error: ...`` line on stderr and exit status 2; the library never prints.
"""


class DigitnetError(Exception):
    """A user error: the message is meant to be shown as it is."""


class DataError(DigitnetError):
    """A data file or data source that cannot be used."""


class TooLargeError(DataError):
    """A file or image larger than what is read (the web page answers it with 413)."""


class ModelFileError(DigitnetError):
    """A model file that is not one, or whose contents do not fit together."""


class ConfigError(DigitnetError):
    """An impossible or unknown setting (hyperparameter, preset, dataset)."""
