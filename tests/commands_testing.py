"""Helpers of tests/test_commands.py: the documented commands, a repository root, jobs.

- `documented_commands`: every command line that README.md and docs/*.md show;
- `make_root`: a temporary directory that looks like the repository root
  (symlinks to the real folders, `../shared` beside it, `.venv/bin/python`
  running this interpreter), so that relative paths work as written and the
  outputs land in the temporary directory;
- `Jobs`: commands run in background threads, each once, at most two
  processes at a time, a job starting when the jobs it reads have finished.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# What a checkout holds that commands read (tests/ is not needed by any command).
ROOT_ENTRIES = ("polyglot", "gin", "tasks", "tools", "docs", "Makefile", "pyproject.toml",
                "README.md")
COMMAND_START = re.compile(r"^(?:\.venv/bin/python|python|tools/|sbatch|make)\b")


# ---- the documented commands ----

def _logical_lines(lines: list[str]) -> list[str]:
  """Fenced-block lines with `\\` continuations joined, `# ...` comments cut, and a line
  that leaves a quote open joined to the next (a multi-line `python -c "..."`)."""
  out, pending, quoted = [], "", False
  for line in lines:
    if not pending:
      if line.lstrip().startswith("#"):
        continue
      pending = line.strip()
    elif quoted:  # inside a quoted argument: the line as it is
      pending += "\n" + line
    else:  # after a `\\`
      pending += " " + line.strip()
    if pending.endswith("\\"):
      pending = pending[:-1].rstrip()
      continue
    try:
      shlex.split(pending, comments=True)
      quoted = False
    except ValueError:  # an open quote: the command goes on
      quoted = True
      continue
    command = _without_comment(pending).strip()
    if command:
      out.append(command)
    pending = ""
  return out


def _without_comment(text: str) -> str:
  """`text` up to its first `#` that is outside quotes and after whitespace."""
  quote = None
  for i, ch in enumerate(text):
    if quote:
      quote = None if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch == "#" and i and text[i - 1].isspace():
      return text[:i]
  return text


def markdown_commands(markdown: str) -> list[str]:
  """The commands of one Markdown file, in order.

  A command is a logical line of a fenced block (a ```python block is one
  command: the whole snippet), an indented code line outside lists that starts
  like a command, or an inline code span that is one (`_inline_command`).
  """
  found, block, fence, lang = [], [], None, ""
  for line in markdown.splitlines():
    stripped = line.strip()
    if stripped.startswith("```"):
      if fence is None:
        fence, lang, block = line[:line.index("`")], stripped[3:].strip(), []
      else:
        if lang == "python":
          found.append("\n".join(l[len(fence):] for l in block).strip())
        else:
          found += _logical_lines(block)
        fence = None
      continue
    if fence is not None:
      block.append(line)
    elif line.startswith("    ") and not stripped.startswith(("-", "|", "*")) and (
        COMMAND_START.match(stripped)):
      found.append(stripped)
    else:
      found += [s for s in re.findall(r"`([^`]+)`", line) if _inline_command(s)]
  return found


def _inline_command(span: str) -> bool:
  """`tools/plan_memory.py --model=large ...` or `python -c "..."`; not a name in prose
  (`python -m polyglot.train`, `make install`, `tools/benchmark.py scaling`)."""
  return bool(COMMAND_START.match(span)) and (" --" in span or span.startswith("python -c "))


def documented_commands() -> list[tuple[str, str]]:
  """(file name, command) for README.md and docs/*.md, in reading order."""
  out = []
  for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
    name = str(path.relative_to(REPO))
    out += [(name, c) for c in markdown_commands(path.read_text(encoding="utf-8"))]
  return out


# ---- a repository root ----

def make_root(base: pathlib.Path) -> pathlib.Path:
  """`base/main`: symlinks to the repository's folders and files, `base/shared` beside it
  when ../shared exists, and `.venv/bin/python` running this interpreter."""
  root = base / "main"
  root.mkdir()
  for name in ROOT_ENTRIES:
    (root / name).symlink_to(REPO / name)
  if SHARED.is_dir():
    (base / "shared").symlink_to(SHARED)
  python = root / ".venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
  python.chmod(0o755)
  return root


def substitute(word: str, replace: Iterable[tuple[str, str]]) -> str:
  """`word` with each `old` replaced by `new` where `old` starts the word or follows
  `=`, `'` or `"` (a path inside `--flag='...'`), never inside another path."""
  for old, new in replace:
    word = re.sub(r"(?:^|(?<=[='\"]))" + re.escape(old), lambda _: new, word)
  return word


# ---- jobs ----

@dataclasses.dataclass
class Result:
  """One finished process."""
  argv: list[str]
  returncode: int
  stdout: str
  stderr: str
  seconds: float

  def ok(self) -> "Result":
    """This result, after checking exit 0 (the message quotes the output's end)."""
    assert self.returncode == 0, (
        f"{shlex.join(self.argv)}\nexit {self.returncode}\n{self.stdout[-2000:]}\n"
        f"{self.stderr[-4000:]}")
    return self


def run(argv: list[str], *, cwd: pathlib.Path, env: dict[str, str], log: pathlib.Path,
        timeout: float = 600, processes: list | None = None) -> subprocess.Popen:
  """Starts `argv`, its stdout and stderr in `log`.out/.err (files never fill up as a pipe
  can); returns the process (registered in `processes`, to be killed on teardown)."""
  with open(f"{log}.out", "w", encoding="utf-8") as out, \
       open(f"{log}.err", "w", encoding="utf-8") as err:
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
  proc.started = time.monotonic()
  proc.log = log
  proc.deadline = proc.started + timeout
  if processes is not None:
    processes.append(proc)
  return proc


def wait(proc: subprocess.Popen) -> Result:
  """Waits for `proc` (killed at its deadline); its result."""
  try:
    proc.wait(timeout=max(1.0, proc.deadline - time.monotonic()))
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
  return Result(list(proc.args), proc.returncode,
                pathlib.Path(f"{proc.log}.out").read_text(encoding="utf-8", errors="replace"),
                pathlib.Path(f"{proc.log}.err").read_text(encoding="utf-8", errors="replace"),
                round(time.monotonic() - proc.started, 1))


def wait_all(procs: list[subprocess.Popen]) -> list[Result]:
  """Waits for processes that need each other (one job's hosts): when one fails, the others
  are killed rather than left waiting for it until their deadline."""
  while any(p.poll() is None for p in procs):
    if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > procs[0].deadline:
      for p in procs:
        if p.poll() is None:
          p.kill()
    time.sleep(0.5)
  return [wait(p) for p in procs]


@dataclasses.dataclass(frozen=True)
class Job:
  """`run()` once the jobs named in `needs` have finished, holding `slots` of the CPUs."""
  run: Callable[[], object]
  needs: tuple[str, ...] = ()
  slots: int = 1


class Jobs:
  """Jobs in background threads: each runs once, at most `slots` processes at a time; of
  the jobs ready to run, the one declared first goes first (so a chain's next step passes
  the independent jobs). `result` waits for a job (and starts it and what it needs if
  nobody has)."""

  def __init__(self, specs: dict[str, Job], slots: int = 2):
    names = list(specs)
    for i, (name, spec) in enumerate(specs.items()):
      for need in spec.needs:
        assert need in names[:i], f"{name} needs {need}, which must be declared before it"
    self.specs, self.slots = specs, slots
    self._rank = {name: i for i, name in enumerate(specs)}
    self._free, self._waiting, self._cond = slots, set(), threading.Condition()
    self._threads: dict[str, threading.Thread] = {}
    self._results: dict[str, tuple[bool, object]] = {}
    self._closed = False
    self.processes: list[subprocess.Popen] = []
    self.seconds: dict[str, float] = {}

  def start(self, names: Iterable[str]) -> None:
    wanted = set()

    def add(name):
      wanted.add(name)
      for need in self.specs[name].needs:
        add(need)

    for name in names:
      add(name)
    with self._cond:
      for name in self.specs:  # declaration order: what is needed starts first
        if name in wanted and name not in self._threads:
          thread = threading.Thread(target=self._work, args=(name,), daemon=True)
          self._threads[name] = thread
          thread.start()

  def result(self, name: str):
    """The value of job `name`'s run (re-raising what it raised)."""
    self.start([name])
    self._threads[name].join()
    ok, value = self._results[name]
    if not ok:
      raise value
    return value

  def _work(self, name: str) -> None:
    spec = self.specs[name]
    try:
      for need in spec.needs:
        self._threads[need].join()
        if not self._results[need][0]:
          raise RuntimeError(f"{name} needs {need}, which failed: {self._results[need][1]!r}")
      self._acquire(name, spec.slots)
      start = time.monotonic()
      try:
        value = spec.run()
      finally:
        self.seconds[name] = round(time.monotonic() - start, 1)
        self._release(spec.slots)
      self._results[name] = (True, value)
    except BaseException as e:  # pylint: disable=broad-except  (re-raised in `result`)
      self._results[name] = (False, e)

  def _acquire(self, name: str, n: int) -> None:
    n, rank = min(n, self.slots), self._rank[name]
    if not n:  # a job that starts no process (a dry run) waits for nobody
      return
    with self._cond:
      self._waiting.add(rank)
      self._cond.wait_for(lambda: self._closed or (min(self._waiting) == rank and
                                                   self._free >= n))
      self._waiting.remove(rank)
      if self._closed:
        raise RuntimeError("the jobs were closed")
      self._free -= n
      self._cond.notify_all()

  def _release(self, n: int) -> None:
    with self._cond:
      self._free += min(n, self.slots)
      self._cond.notify_all()

  def close(self) -> None:
    """Stops what has not started, kills what runs, waits for every thread."""
    with self._cond:
      self._closed = True
      self._cond.notify_all()
    for proc in self.processes:
      if proc.poll() is None:
        proc.kill()
    for thread in self._threads.values():
      thread.join(timeout=60)


# ---- a tiny XLM-R download ----

def write_tiny_xlmr(directory: str) -> None:
  """A random tiny `XLMRobertaForMaskedLM` folder, as `save_pretrained` writes one, with
  the embedded corpus's SentencePiece model (`sentencepiece.bpe.model`)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from polyglot import models  # pylint: disable=g-import-not-at-top
  from polyglot.convert import hf  # pylint: disable=g-import-not-at-top
  from polyglot.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  vocab = vocab_lib.default_vocabulary()
  torch.manual_seed(0)
  cfg = models.preset("tiny", vocab_size=vocab.vocab_size)
  model = transformers.XLMRobertaForMaskedLM(transformers.XLMRobertaConfig(**hf.config_to_hf(cfg)))
  model.save_pretrained(directory)
  vocab.save(directory)


if __name__ == "__main__":
  if sys.argv[1:2] == ["tiny-xlmr"]:
    write_tiny_xlmr(sys.argv[2])
  else:
    sys.exit(f"usage: {sys.argv[0]} tiny-xlmr DIRECTORY")
