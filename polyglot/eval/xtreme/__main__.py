"""`python -m polyglot.eval.xtreme`: `python -m polyglot.eval --benchmark=xtreme`."""
import sys

from polyglot.eval.__main__ import main

if __name__ == "__main__":
  sys.exit(main(["--benchmark=xtreme", *sys.argv[1:]], prog="python -m polyglot.eval.xtreme"))
