"""Errors that the command line reports as one line, before anything is written."""

from typing import Iterable


class ConfigError(ValueError):
  """A config value or a dataset that cannot work, with the bad value and valid choices."""


def check_choice(name: str, value: object, choices: Iterable[object], *,
                 error: type[Exception] = ValueError, choices_name: str = '') -> None:
  """Raises `error('unknown NAME VALUE; valid [CHOICES_NAME]: a, b, c')` unless `value` is
  one of `choices`: the one form every bad choice is reported in."""
  choices = tuple(choices)
  if value not in choices:
    label = f'valid {choices_name}' if choices_name else 'valid'
    raise error(f'unknown {name} {value!r}; {label}: {", ".join(map(str, choices))}')
