"""The evaluation core and its benchmarks: the table checks, the registry, the command's
--benchmark flag, and a core that imports no benchmark."""
import ast
import dataclasses
import pathlib
import subprocess
import sys

import pytest

from polyglot.errors import ConfigError
from polyglot.eval import benchmarks, readers
from polyglot.eval.tasks import FileLayout
from polyglot.eval.xtreme.tasks import BENCHMARK as XTREME

REPO = pathlib.Path(__file__).resolve().parents[1]
CORE = sorted((REPO / "polyglot" / "eval").glob("*.py"))


def test_registry_gives_each_benchmark_by_name():
  assert benchmarks.get("xtreme") is XTREME
  assert list(XTREME.tasks) == ["xnli", "pawsx", "udpos", "panx", "xquad", "mlqa", "tydiqa",
                                "bucc2018", "tatoeba"]
  with pytest.raises(ConfigError, match="unknown benchmark 'xtrem': use one of xtreme"):
    benchmarks.get("xtrem")


def test_a_benchmark_needs_a_category_and_a_reader_for_every_task():
  with pytest.raises(ConfigError, match=r"tasks \['tatoeba'\] need exactly one category"):
    dataclasses.replace(XTREME, categories={k: v for k, v in XTREME.categories.items()
                                            if k != "tatoeba"})
  xnli = XTREME.task("xnli")
  csv = dataclasses.replace(xnli, layouts=(FileLayout("x", r"(?P<lang>[a-z]+)\.csv", "csv",
                                                      split="test"),))
  with pytest.raises(ConfigError, match=r"no reader for file formats \['csv'\]"):
    dataclasses.replace(XTREME, tasks={"xnli": csv}, categories={"xnli": "c"})


def test_a_file_format_is_registered_once():
  reader = readers.FILE_READERS["pair_tsv"]
  readers.register_file_format("pair_tsv", reader)  # the same reader again: a no-op
  with pytest.raises(ConfigError, match="'pair_tsv' is registered twice"):
    readers.register_file_format("pair_tsv", lambda f, lang, labels: [])
  assert readers.FILE_READERS["pair_tsv"] is reader


def _imports(path: pathlib.Path) -> set[str]:
  tree = ast.parse(path.read_text(encoding="utf-8"))
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
  return found


@pytest.mark.parametrize("module", CORE, ids=lambda p: p.name)
def test_the_core_imports_no_benchmark(module):
  packages = {m.rsplit(".", 1)[0] for m in benchmarks.MODULES.values()}
  assert not {i for i in _imports(module) for p in packages if i == p or i.startswith(p + ".")}


def _command(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "polyglot.eval", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, error", [
    (("--checkpoint_dir=c", "--output_dir=o"),
     "error: the following arguments are required: --benchmark; see --help"),
    (("--benchmark=xglu", "--checkpoint_dir=c", "--output_dir=o"),
     "error: argument --benchmark: invalid choice: 'xglu' (choose from"),
    (("--benchmark=xtreme", "--checkpoint_dir=c", "--output_dir=o", "--tasks=xnli,bogus"),
     "error: unknown XTREME task 'bogus'; known: xnli, pawsx, udpos"),
])
def test_the_command_names_a_bad_benchmark_in_one_line(args, error):
  proc = _command(*args)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(error), proc.stderr
  assert "Traceback" not in proc.stderr
