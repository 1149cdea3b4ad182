"""Command-line plumbing of the conversion tools and `python -m polyglot.fill_mask`.

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

from polyglot import _env
from polyglot.errors import ConfigError, PolyglotError


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose usage errors are one line and exit 2; `description` is the tool's docstring.

  Errors name a flag by its primary spelling (`--text_dir`), not with its
  hyphenated alias (`--text_dir/--text-dir`).
  """

  def __init__(self, description: str):
    super().__init__(description=description,
                     formatter_class=argparse.RawDescriptionHelpFormatter)

  def error(self, message: str) -> NoReturn:
    message = re.sub(r"/--[a-z0-9]+(?:-[a-z0-9]+)+", "", message)
    print(f"error: {message} (see --help)", file=sys.stderr)
    sys.exit(2)


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
