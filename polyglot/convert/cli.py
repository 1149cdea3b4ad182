"""Command-line plumbing of the tools and `python -m polyglot.fill_mask`.

Every error is one line, `error: <message>`, on stderr. Exit codes: 2 for bad
arguments or configuration values, 1 for inputs that cannot be used (a
missing checkpoint, weights of another model, an unwritable directory), 0 on
success.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Callable, NoReturn, Sequence

from polyglot import _env, paths
from polyglot.errors import ConfigError, DataError, PolyglotError


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose usage errors are one line and exit 2; `description` is the tool's docstring.

  Errors name a flag by its primary spelling (`--text_dir`), not with its
  hyphenated alias (`--text_dir/--text-dir`). Subcommands' parsers are of
  this class too.
  """

  def __init__(self, description: str | None = None, **kwargs):
    super().__init__(description=description,
                     formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

  def error(self, message: str) -> NoReturn:
    message = re.sub(r"/--[a-z0-9]+(?:-[a-z0-9]+)+", "", message)
    print(f"error: {message} (see --help)", file=sys.stderr)
    sys.exit(2)


def _bounded_int(least: int) -> Callable[[str], int]:
  """An argparse type: an integer >= `least`."""
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < least:
      raise argparse.ArgumentTypeError(f"{value} is invalid: use an integer >= {least}")
    return value
  return parse


positive_int = _bounded_int(1)
non_negative_int = _bounded_int(0)


def check_output_file(path: str, flag: str, example: str) -> None:
  """DataError unless `path` can be written as a file; `flag` names it, `example` is a file
  name to suggest when it is a directory."""
  if paths.Path(path).is_dir():
    raise DataError(f"{flag} {path} is a directory: pass the path of the file to write, e.g. "
                    f"{flag} {paths.join(path, example)}")
  reason = paths.why_unwritable(path)
  if reason:
    raise DataError(f"{flag} {path} cannot be written ({reason}): pass a path in a writable "
                    "directory")


def main(parser: ArgumentParser, action: Callable[[argparse.Namespace], str],
         argv: Sequence[str] | None = None) -> int:
  """Parses `argv`, runs `action` and prints its report; returns the exit code.

  Hugging Face is used offline: converters read and write local directories only.
  """
  args = parser.parse_args(argv)
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  _env.quiet_libraries()
  try:
    print(action(args))
  except ConfigError as e:
    _error(e)
    return 2
  except (PolyglotError, OSError) as e:  # OSError: an unreadable input, an unwritable output
    _error(e)
    return 1
  return 0


def _error(e: Exception) -> None:
  print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)
