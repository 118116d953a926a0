"""absl flags for the bench commands that tests also call in one process.

Several commands define the same flag names (--model, --batch_size, --image_size), and
absl's global FLAGS refuses a name defined by a second module: each such command defines
its flags in a FlagValues of its own and parses them here. The syntax is absl's
(--name=value, --name value, --noname), as every other command's; a bad flag is one line
and exit status 2.
"""

import sys
from typing import Iterable, NoReturn, Sequence

from absl import flags


def fail(prog: str, message: str) -> NoReturn:
  """One line on stderr naming the bad value, exit status 2."""
  print(f'{prog}: error: {message}', file=sys.stderr)
  sys.exit(2)


def parse(values: flags.FlagValues, argv: Sequence[str], *, prog: str,
          doc: str) -> flags.FlagValues:
  """`values` parsed from `argv` (without the program name), from the defaults each call.

  --help prints `doc` and the flags, then exits 0.
  """
  if any(arg in ('--help', '-h', '--helpfull') for arg in argv):
    print(f'{doc.strip()}\n\nflags:\n{values.get_help()}')
    sys.exit(0)
  values.unparse_flags()  # a second in-process call starts from the defaults again
  try:
    rest = values([prog, *argv])
  except flags.Error as error:
    fail(prog, ' '.join(str(error).split()))
  if len(rest) > 1:
    fail(prog, f'unexpected arguments {rest[1:]}; every setting is a --flag (--help)')
  return values


def define_subset(name: str, choices: Iterable[str], help_text: str, *,
                  flag_values: flags.FlagValues) -> None:
  """A comma-separated list flag (absl's DEFINE_list) of some of `choices`, all of them by
  default, empty for none; an unknown item is refused at parse, naming it and the choices."""
  choices = tuple(choices)
  flags.DEFINE_list(name, list(choices), f'{help_text}: comma-separated subset of '
                    f'{",".join(choices)}', flag_values=flag_values)

  def check(items: list[str]) -> bool:
    unknown = [item for item in items if item not in choices]
    if unknown:
      raise flags.ValidationError(
          f'unknown --{name} {",".join(unknown)}; valid: {",".join(choices)}')
    return True
  flags.register_validator(name, check, flag_values=flag_values)
