"""Process environment set before TensorFlow or JAX is imported.

TensorFlow is used only for input pipelines (seqio); it must neither claim
accelerators nor print its CUDA probing and oneDNN notices. Its C++ logger
writes to file descriptor 2 before any log level applies, so the first import
runs with that descriptor pointed at /dev/null.

Paths: etils.epath (Orbax's and polyglot's path library, see polyglot/paths.py)
reaches buckets through fsspec rather than TensorFlow's gfile.
"""
import contextlib
import logging
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("EPATH_USE_TF", "false")


@contextlib.contextmanager
def _silenced_stderr_fd():
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


@contextlib.contextmanager
def without_modules(*names: str):
  """`import <name>` raises ImportError inside, for each of `names` not yet imported: for
  libraries that import an optional dependency they do not need here."""
  blocked = [n for n in names if n not in sys.modules]
  for name in blocked:
    sys.modules[name] = None
  try:
    yield
  finally:
    for name in blocked:
      del sys.modules[name]


def import_tensorflow():
  """Imports TensorFlow (and seqio's tensorflow_text) quietly, CPU only; returns `tf`.

  TensorFlow imports Keras at once, and Keras imports scikit-learn for its
  scikit-learn wrappers, which nothing here uses: without it the import takes
  about 0.5 s less (3.5 against 4.0 s on 2 cores). scikit-learn still imports afterwards.
  """
  if "tensorflow" not in sys.modules:
    with _silenced_stderr_fd(), without_modules("sklearn"):
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      import tensorflow_text  # noqa: F401  pylint: disable=unused-import
      tf.config.set_visible_devices([], "GPU")
  return sys.modules["tensorflow"]


# Libraries whose INFO/WARNING lines are not the user's business: Orbax (through absl),
# JAX's internals, TensorFlow, and the bucket clients (fsspec's read-ahead notices,
# google-auth's credential probing).
NOISY_LOGGERS = ("absl", "jax._src", "orbax", "tensorflow", "fsspec", "gcsfs", "google")


def _not_orbax(record: logging.LogRecord) -> bool:
  return f"{os.sep}orbax{os.sep}" not in record.pathname


def _from_orbax(tb) -> bool:
  while tb is not None:
    if f"{os.sep}orbax{os.sep}" in tb.tb_frame.f_code.co_filename:
      return True
    tb = tb.tb_next
  return False


def _not_orphaned_task(record: logging.LogRecord) -> bool:
  """Drops asyncio's "<Task, Future, _GatheringFuture> exception was never retrieved": in
  polyglot's entry points only Orbax (TensorStore) and fsspec run event loops, and they leave
  the reads and writes still in flight when their first error ends an operation, an error
  that reaches polyglot as that operation's exception."""
  return "exception was never retrieved" not in record.getMessage()


def _without_failed_io_noise(hook):
  """`hook` (sys.unraisablehook) minus the leftovers of an Orbax save or restore that has
  already failed (and raised): TensorStore calling back into its ended event loop ("Event
  loop is closed"), and its read coroutines finalized with their own copy of the error."""
  def unraisablehook(unraisable):
    value = unraisable.exc_value
    closed_loop = isinstance(value, RuntimeError) and str(value) == "Event loop is closed"
    if not (closed_loop or _from_orbax(unraisable.exc_traceback)):
      hook(unraisable)
  return unraisablehook


def quiet_libraries() -> None:
  """Entry points: other libraries log errors only, and Orbax none: every failure of a save
  or restore reaches polyglot as an exception and is reported once, as one line (Orbax also
  logs it from each of its threads, asyncio for each read still in flight, TensorStore for
  each callback into the ended event loop, Python for each read never started, all with
  tracebacks)."""
  for name in NOISY_LOGGERS:
    logging.getLogger(name).setLevel(logging.ERROR)
  absl = logging.getLogger("absl")
  if _not_orbax not in absl.filters:
    absl.addFilter(_not_orbax)
  orphans = logging.getLogger("asyncio")
  if _not_orphaned_task not in orphans.filters:
    orphans.addFilter(_not_orphaned_task)
  if sys.unraisablehook is sys.__unraisablehook__:
    sys.unraisablehook = _without_failed_io_noise(sys.unraisablehook)
  # The same reads, never started when the operation ended (polyglot has no coroutines).
  warnings.filterwarnings("ignore", message=r"coroutine '.*' was never awaited",
                          category=RuntimeWarning)
