"""A real GCS API on 127.0.0.1 for bucket-path tests: gcp-storage-emulator, in memory.

Clients are pointed at it by their standard settings only (no code path of
polyglot knows about the emulator):

  STORAGE_EMULATOR_HOST     gcsfs (polyglot.paths, Orbax's directories) and
                            google-cloud-storage (tensorboardX's event files)
  TENSORSTORE_GCS_HTTP_URL  TensorStore (Orbax's arrays)

TensorFlow's own GCS client has a fixed endpoint (https://www.googleapis.com)
and cannot be pointed at an emulator: tf.data over `gs://` text and TFDS data
dirs in buckets are the parts these tests do not reach.

Two gaps of the emulator are filled here (`serve`):
- GCS sends an object's `x-goog-generation` with every download
  (cloud.google.com/storage/docs/xml-api/reference-headers#xgooggeneration);
  the emulator omits it, and TensorStore, which needs it for the
  compare-and-swap of Orbax's OCDBT manifests, then fails with "Malformed
  StorageGeneration".
- GCS refuses an upload or delete whose `ifGenerationMatch` precondition does
  not hold with 412 Precondition Failed (cloud.google.com/storage/docs/
  request-preconditions); the emulator ignores the parameter. polyglot's
  workdir lock relies on it.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request
from http import HTTPStatus

BUCKET = "polyglot-test"
# gcsfs reads this when it is imported: it would ask the Storage Control API, which the
# emulator lacks, for each bucket's type (and warn).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def client_env(url: str) -> dict[str, str]:
  """The settings that send every client of a process to the emulator at `url`."""
  return {
      "STORAGE_EMULATOR_HOST": url,
      "TENSORSTORE_GCS_HTTP_URL": url,
      "GOOGLE_CLOUD_PROJECT": "polyglot-test",
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
  }


@contextlib.contextmanager
def emulator(log_path: pathlib.Path):
  """Starts the emulator with an empty bucket `BUCKET`; yields its URL."""
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  with open(log_path, "w", encoding="utf-8") as log:
    proc = subprocess.Popen([sys.executable, __file__, str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
      deadline = time.monotonic() + 60
      while True:
        try:
          urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}", timeout=2).close()
          break
        except OSError:
          if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the GCS emulator did not start: {log_path.read_text()}")
          time.sleep(0.2)
      yield url
    finally:
      proc.terminate()
      proc.wait(timeout=30)


@contextlib.contextmanager
def pointed_at(url: str):
  """This process's clients sent to the emulator at `url` for the block."""
  saved = {k: os.environ.get(k) for k in client_env(url)}
  os.environ.update(client_env(url))
  try:
    yield
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def serve(port: int) -> None:
  """Runs the emulator on 127.0.0.1:`port` until killed, with generation headers."""
  import logging  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top
  download = objects.download

  def download_with_generation(request, response, storage, *args, **kwargs):
    download(request, response, storage, *args, **kwargs)
    try:
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except Exception:  # pylint: disable=broad-except  (404: nothing to add)
      return
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj["metageneration"])

  def generation_matches(request, storage, name: str) -> bool:
    wanted = request.query.get("ifGenerationMatch")
    if not wanted or name is None:
      return True
    try:
      have = str(storage.get_file_obj(request.params["bucket_name"], name)["generation"])
    except Exception:  # pylint: disable=broad-except  (absent: generation 0)
      have = "0"
    return have == wanted[0]

  def with_precondition(handler, object_name):
    def handle(request, response, storage, *args, **kwargs):
      if not generation_matches(request, storage, object_name(request)):
        response.status = HTTPStatus.PRECONDITION_FAILED
        response.json({"error": {"code": 412, "message": "conditionNotMet"}})
        return None
      return handler(request, response, storage, *args, **kwargs)
    return handle

  def uploaded_name(request):
    if "name" in request.query:
      return request.query["name"][0]
    data = request.data
    return data.get("meta", {}).get("name") if isinstance(data, dict) else None

  # Before the server module builds its routes:
  objects.download = download_with_generation
  objects.insert = with_precondition(objects.insert, uploaded_name)
  objects.delete = with_precondition(objects.delete, lambda r: r.params["object_id"])
  from gcp_storage_emulator.server import create_server  # pylint: disable=g-import-not-at-top
  logging.basicConfig(level=logging.ERROR)
  server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
  server.start()
  while True:
    time.sleep(3600)


if __name__ == "__main__":
  serve(int(sys.argv[1]))
