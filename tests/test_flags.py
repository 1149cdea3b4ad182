"""Flags: one spelling, absl/T5X style (`--text_dir`), with the hyphenated one as an alias.

Every tool in tools/ and every `python -m polyglot...` entry point shows its
multi-word flags with underscores first in --help, and its hyphenated alias
parses to the same value; README.md and docs/*.md write polyglot command
lines with underscores.
"""
import contextlib
import importlib.util
import io
import pathlib
import re
from typing import Callable, NamedTuple

import pytest

from polyglot import paths

REPO = pathlib.Path(__file__).resolve().parents[1]
HYPHENATED = re.compile(r"--[a-z0-9]+(?:-[a-z0-9]+)+")  # --text-dir; not --gin.X, --xla_...


def tool(name: str):
  """The module of tools/<name>.py (its imports stay lazy: no JAX work)."""
  spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def parse_args_of(parser_fn: Callable) -> Callable:
  return lambda argv: parser_fn().parse_args(argv)


def train_parse(argv):
  from polyglot import train  # pylint: disable=g-import-not-at-top
  return train.parse_flags(argv)


def eval_parse(argv):
  from polyglot.eval import __main__ as cli  # pylint: disable=g-import-not-at-top
  return cli.parse_flags(argv)


def xtreme_parse(argv):  # python -m polyglot.eval.xtreme: --benchmark=xtreme
  from polyglot.eval import __main__ as cli  # pylint: disable=g-import-not-at-top
  return cli.parse_flags(["--benchmark=xtreme", *argv], "python -m polyglot.eval.xtreme")


def languages_parse(argv):
  from polyglot.eval import languages  # pylint: disable=g-import-not-at-top
  return languages.parser().parse_args(argv)


def fill_mask_parse(argv):
  from polyglot import fill_mask  # pylint: disable=g-import-not-at-top
  return fill_mask.parser().parse_args(argv)


def bitext_parse(argv):
  from polyglot.eval import bitext  # pylint: disable=g-import-not-at-top
  return bitext.parser().parse_args(argv)


class Entry(NamedTuple):
  parse: Callable            # argv -> argparse.Namespace
  commands: tuple            # argv prefixes whose --help lists the flags: (), or subcommands
  required: tuple            # argv that satisfies the required flags
  alias: tuple               # (argv prefix, primary flag, hyphenated alias, value, dest) or ()


def entries() -> dict[str, Entry]:
  return {
      "tools/train_vocab.py": Entry(
          parse_args_of(tool("train_vocab").parser), ((),), ("--output", "v.model"),
          ((), "--vocab_size", "--vocab-size", "320", "vocab_size")),
      "tools/plan_memory.py": Entry(  # no multi-word flag
          parse_args_of(tool("plan_memory").parser), ((),),
          ("--model", "tiny", "--mesh", "data=1", "--batch", "8"), ()),
      "tools/benchmark.py": Entry(
          parse_args_of(tool("benchmark").parser),
          (("train",), ("scaling",), ("data",), ("corpus",)), (),
          (("train",), "--seq_len", "--seq-len", "64", "seq_len")),
      "tools/convert_to_hf.py": Entry(
          parse_args_of(tool("convert_to_hf").parser), ((),), ("--output_dir", "out"),
          ((), "--checkpoint_dir", "--checkpoint-dir", "ckpt", "checkpoint_dir")),
      "tools/convert_from_hf.py": Entry(
          parse_args_of(tool("convert_from_hf").parser), ((),), ("--output_dir", "out"),
          ((), "--hf_dir", "--hf-dir", "hf", "hf_dir")),
      "tools/cache_tasks.py": Entry(
          parse_args_of(tool("cache_tasks").parser), ((),), ("--output_dir", "o"),
          ((), "--part_mb", "--part-mb", "3", "part_mb")),
      "tools/extend_vocab.py": Entry(
          parse_args_of(tool("extend_vocab").parser), ((),),
          ("--checkpoint_dir", "c", "--output_dir", "o", "--mixture", "embedded"),
          ((), "--init_std", "--init-std", "0.5", "init_std")),
      "polyglot.train": Entry(
          train_parse, ((),), (), ((), "--num_processes", "--num-processes", "2", "num_processes")),
      "polyglot.eval": Entry(
          eval_parse, ((),), ("--benchmark", "xtreme", "--checkpoint_dir", "c", "--output_dir", "o"),
          ((), "--data_dir", "--data-dir", "d", "data_dir")),
      "polyglot.eval.xtreme": Entry(
          xtreme_parse, ((),), ("--checkpoint_dir", "c", "--output_dir", "o"),
          ((), "--data_dir", "--data-dir", "d", "data_dir")),
      "tools/objectives_experiment.py": Entry(  # one multi-word flag, boolean (its alias:
          parse_args_of(tool("objectives_experiment").parser), ((),), (), ()),  # below)
      "tools/multilingual_experiment.py": Entry(
          parse_args_of(tool("multilingual_experiment").parser), ((),), (),
          ((), "--vocab_size", "--vocab-size", "320", "vocab_size")),
      "polyglot.eval.languages": Entry(  # no multi-word flag
          languages_parse, ((),), ("workdir",), ()),
      "polyglot.eval.bitext": Entry(
          bitext_parse, ((),), ("--checkpoint_dir", "c", "--files", "a,b"),
          ((), "--max_pairs", "--max-pairs", "5", "max_pairs")),
      "polyglot.fill_mask": Entry(
          fill_mask_parse, ((),), ("--checkpoint_dir", "c", "a <mask>"),
          ((), "--top_k", "--top-k", "3", "top_k")),
  }


def entry_points_in_repo() -> set[str]:
  """tools/*.py and the modules that run as `python -m polyglot...`."""
  found = {f"tools/{p.name}" for p in (REPO / "tools").glob("*.py")}
  for p in (REPO / "polyglot").rglob("*.py"):
    if p.name == "__main__.py" or 'if __name__ == "__main__":' in p.read_text():
      module = p.relative_to(REPO).with_suffix("").parts
      found.add(".".join(module[:-1] if p.name == "__main__.py" else module))
  return found


def help_text(parse: Callable, argv: tuple) -> str:
  out = io.StringIO()
  with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
    parse([*argv, "--help"])
  assert done.value.code == 0
  return out.getvalue()


def option_groups(text: str) -> list[list[str]]:
  """The flags of each option line of --help: `  --text_dir TEXT_DIR, --text-dir TEXT_DIR`."""
  groups = []
  for line in text.splitlines():
    if re.match(r"  -", line):
      invocation = re.split(r"\s{2,}", line.strip())[0]  # help text follows 2+ spaces
      groups.append([part.split()[0] for part in invocation.split(", ")])
  return groups


ENTRIES = entries()


def test_every_tool_and_entry_point_is_checked():
  assert entry_points_in_repo() == set(ENTRIES)


@pytest.mark.parametrize("script", sorted((REPO / "tools").glob("*.sh")), ids=lambda p: p.name)
def test_launcher_options_are_single_words_or_underscored(script):
  """Each case arm of a launcher's options (`--setup)`, `--dry_run|--dry-run)`) starts with
  the underscore spelling; a hyphenated spelling is only its alias."""
  arms = [arm.split("|") for arm in re.findall(r"^\s*(--[\w|-]+)\)", script.read_text(),
                                                flags=re.MULTILINE)]
  assert {arm[0] for arm in arms} >= {"--dry_run"}  # every launcher has a dry run
  for first, *aliases in arms:
    assert not HYPHENATED.fullmatch(first), first
    assert all(a == first.replace("_", "-") for a in aliases), (first, aliases)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_help_shows_underscores_first_and_hyphens_only_as_aliases(name):
  entry = ENTRIES[name]
  for command in entry.commands:
    text = help_text(entry.parse, command)
    groups = option_groups(text)
    assert groups, text
    for flags in groups:
      assert not HYPHENATED.fullmatch(flags[0]), f"{name} {command}: {flags} shows a hyphen first"
      for flag in flags[1:]:
        if HYPHENATED.fullmatch(flag):
          assert "--" + flag[2:].replace("-", "_") in flags, f"{name}: {flag} has no twin"
    # Usage and description (the tool's docstring) write commands with underscores too.
    prose = [line for line in text.splitlines() if not re.match(r"  -", line)]
    assert not HYPHENATED.findall("\n".join(prose)), f"{name} {command}"


@pytest.mark.parametrize("name", sorted(n for n in ENTRIES if ENTRIES[n].alias))
def test_hyphenated_alias_parses_to_the_same_value(name):
  entry = ENTRIES[name]
  prefix, primary, alias, value, dest = entry.alias
  ours = entry.parse([*prefix, *entry.required, primary, value])
  theirs = entry.parse([*prefix, *entry.required, alias, value])
  # Path flags are resolved once, at the entry point (polyglot.paths).
  want = (paths.resolve(value) if dest.endswith("dir") or dest == "output"
          else type(getattr(ours, dest))(value))
  assert getattr(ours, dest) == getattr(theirs, dest) == want
  assert vars(ours) == vars(theirs)
  glued = entry.parse([*prefix, *entry.required, f"{alias}={value}"])
  assert vars(glued) == vars(ours)


def test_objectives_experiment_boolean_flag_and_its_alias():
  parse = ENTRIES["tools/objectives_experiment.py"].parse
  assert parse(["--tokens", "4096", "--no-udpos"]).no_udpos
  assert parse(["--tokens", "4096", "--no_udpos"]).no_udpos
  assert not parse(["--tokens", "4096"]).no_udpos


def test_benchmark_boolean_flags_and_their_aliases():
  parse = parse_args_of(tool("benchmark").parser)
  assert parse(["train"]).scan is None
  assert parse(["train", "--scan"]).scan is True
  assert parse(["train", "--no_scan"]).scan is parse(["train", "--no-scan"]).scan is False
  for spelling in ("--no_record", "--no-record"):
    assert parse(["train", spelling]).no_record is True
  for spelling in ("--compare_hf", "--compare-hf"):
    assert parse(["train", spelling]).compare_hf is True
  assert parse(["data", "--batch-size", "4"]).batch_size == 4


def test_benchmark_records_commands_with_underscores(monkeypatch):
  benchmark = tool("benchmark")
  monkeypatch.setattr("sys.argv", ["tools/benchmark.py", "train", "--batch-size", "4",
                                   "--note", "a --b-c note", "--prediction-rate=none",
                                   "--mesh", "data=-1"])
  assert benchmark.command_line() == ("python tools/benchmark.py train --batch_size 4 "
                                      "--prediction_rate=none --mesh data=-1")


# ---- README.md and docs/*.md ----

POLYGLOT_COMMAND = re.compile(r"(?:tools/\w+\.(?:py|sh)|-m polyglot[\w.]*)")


def known_aliases() -> set[str]:
  aliases = set()
  for entry in ENTRIES.values():
    for command in entry.commands:
      for flags in option_groups(help_text(entry.parse, command)):
        aliases.update(f for f in flags if HYPHENATED.fullmatch(f))
  return aliases


def code_texts(markdown: str) -> list[str]:
  """Fenced block lines (continuations joined, comments cut), indented code lines, inline spans."""
  texts, fenced, logical = [], False, ""
  for line in markdown.splitlines():
    if line.lstrip().startswith("```"):
      fenced = not fenced
      continue
    if fenced:
      logical += re.sub(r"\s+#.*$", "", line).rstrip()
      if logical.endswith("\\"):
        logical = logical[:-1]
        continue
      texts.append(logical)
      logical = ""
    elif line.startswith("    ") and not line.lstrip().startswith(("-", "|")):
      texts.append(line)
    texts += re.findall(r"`([^`]+)`", line) if not fenced else []
  return texts


def doc_files() -> list[pathlib.Path]:
  return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_code_texts_see_fences_continuations_and_spans():
  texts = code_texts("a `--x_y` b\n```bash\npython tools/t.py --a_b \\\n    --c-d 1  # e\n```\n")
  assert texts == ["--x_y", "python tools/t.py --a_b     --c-d 1"]


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.name)
def test_docs_write_polyglot_flags_with_underscores(doc):
  aliases = known_aliases()
  bad = []
  for text in code_texts(doc.read_text(encoding="utf-8")):
    match = POLYGLOT_COMMAND.search(text)
    if match:  # flags before the command (sbatch, srun) are not polyglot's
      bad += HYPHENATED.findall(text[match.end():])
    elif text.startswith("--"):  # a flag named in prose: `--compare_hf`
      bad += [f for f in HYPHENATED.findall(text) if f in aliases]
  assert not bad, f"{doc.name}: use {sorted({'--' + f[2:].replace('-', '_') for f in bad})}"


def test_usage_errors_name_the_primary_spelling(capsys):
  parse = parse_args_of(tool("extend_vocab").parser)
  with pytest.raises(SystemExit):
    parse(["--output-dir", "o", "--text-dir", "t", "--mixture", "m"])
  assert capsys.readouterr().err.strip() == (
      "error: argument --mixture: not allowed with argument --text_dir (see --help)")
  with pytest.raises(SystemExit):
    parse(["--output-dir", "o", "--mixture", "m"])
  assert capsys.readouterr().err.strip() == (
      "error: the following arguments are required: --checkpoint_dir (see --help)")
