"""Errors that the command line reports as one line, before anything is written."""


class ConfigError(ValueError):
  """A config value or a dataset that cannot work, with the bad value and valid choices."""
