"""Language ids: an ISO 639-3 code and an ISO 15924 script, e.g. `swh_Latn`.

Corpora name languages in different ways: CC-100 and mC4 use ISO 639-1 codes
(`sw`, `pt`) with script or romanization suffixes (`zh-Hans`, `hi_rom`,
`hi-Latn`); Glot500-c and UDHR use ISO 639-3 plus script (`swh_Latn`);
gflanguages uses BCP-47 (`sw_Latn`). `resolve` maps each to one canonical id so
that tasks, mixtures and reports name a language the same way whatever the
corpus.

Rules (each a table below, so a reader can check one line at a time):
- A two-letter code becomes its ISO 639-3 code (pycountry, i.e. Debian's
  iso-codes); where that is a macrolanguage, the principal individual
  language of `MACROLANGUAGE_DEFAULTS` (`sw` -> `swh`, `zh` -> `cmn`), the
  codes UDHR in Unicode and FLORES-200 use for these corpora.
- A three-letter code is kept as written once pycountry knows it (`swa` stays
  `swa`): whoever writes ISO 639-3 means it.
- A missing script is taken from `DEFAULT_SCRIPTS`, else from gflanguages (the
  living script with the most speakers, else a historical one: Latin).
"""
from __future__ import annotations

import dataclasses
import functools
import re

import pycountry

from polyglot.errors import DataError

# ISO 639-1 macrolanguage -> the individual language its corpora hold.
MACROLANGUAGE_DEFAULTS = {
    "ar": "arb", "ay": "ayr", "az": "azj", "fa": "pes", "gn": "gug", "ku": "kmr",
    "lv": "lvs", "mg": "plt", "mn": "khk", "ms": "zsm", "ne": "npi", "no": "nob",
    "om": "gaz", "or": "ory", "ps": "pbt", "sq": "als", "sw": "swh", "uz": "uzn",
    "yi": "ydd", "zh": "cmn",
}
# Withdrawn ISO 639-1 codes still used by corpora (mC4 names Hebrew `iw`).
WITHDRAWN_CODES = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro"}
# CC-100 names Northern Sotho `ns`, which is no ISO 639-1 code.
CORPUS_CODES = {"ns": "nso"}
# CC-100 suffixes: `_rom` is romanized text; `_zaw` is Burmese in the Zawgyi
# encoding, which CLDR tags with the private-use script `Qaag`.
SUFFIX_SCRIPTS = {"rom": "Latn", "zaw": "Qaag"}
# Languages written in several scripts, where the most-spoken script (the
# gflanguages fallback) is not the one their web text uses.
# Also languages gflanguages lacks under that code (`zsm`, `tgl`).
DEFAULT_SCRIPTS = {
    "aka": "Latn", "azj": "Latn", "bam": "Latn", "bos": "Latn", "cre": "Cans",
    "hau": "Latn", "hbs": "Latn", "iku": "Cans", "kmr": "Latn", "pan": "Guru",
    "som": "Latn", "srp": "Cyrl", "tgl": "Latn", "zha": "Latn", "zsm": "Latn",
}
_TAG = re.compile(r"^(?P<lang>[A-Za-z]{2,3})(?:[-_](?P<sub>[A-Za-z]{3,4}))?$")


@dataclasses.dataclass(frozen=True)
class Language:
  """A language as tasks name it: `code` (ISO 639-3) written in `script` (ISO 15924)."""
  code: str
  script: str

  @property
  def id(self) -> str:
    return f"{self.code}_{self.script}"

  @property
  def name(self) -> str:
    return pycountry.languages.get(alpha_3=self.code).name


def _iso639_3(code: str, tag: str) -> str:
  """ISO 639-3 code for a two- or three-letter code; DataError when unknown."""
  code = code.lower()
  code = CORPUS_CODES.get(code, WITHDRAWN_CODES.get(code, code))
  if len(code) == 2:
    if code in MACROLANGUAGE_DEFAULTS:
      return MACROLANGUAGE_DEFAULTS[code]
    entry = pycountry.languages.get(alpha_2=code)
  else:
    entry = pycountry.languages.get(alpha_3=code)
  if entry is None or entry.scope not in ("I", "M"):
    raise DataError(f"unknown language code {tag!r}: use an ISO 639-1 or ISO 639-3 code, "
                    "optionally with an ISO 15924 script, e.g. 'sw', 'swh_Latn', 'zh-Hans'")
  return entry.alpha_3


def _is_script(script: str) -> bool:
  private_use = "Qaaa" <= script <= "Qabx"
  return private_use or pycountry.scripts.get(alpha_4=script) is not None


@functools.cache
def _gflanguages_scripts() -> dict[str, tuple[str, ...]]:
  """ISO 639-3 code -> scripts in gflanguages: living ones first, most speakers first."""
  import gflanguages  # pylint: disable=g-import-not-at-top
  found: dict[str, list[tuple[bool, int, str]]] = {}
  for lang in gflanguages.LoadLanguages().values():
    try:
      codes = {_iso639_3(lang.language, lang.id)}
    except DataError:
      continue  # collective or withdrawn codes (`art`, `ber`): not a language id
    if len(lang.language) == 2:  # also under the macrolanguage code: `sw` is `swa` too
      codes.add(pycountry.languages.get(alpha_2=lang.language).alpha_3)
    for code in codes:
      found.setdefault(code, []).append((lang.historical, -lang.population, lang.script))
  return {code: tuple(s for *_, s in sorted(keys)) for code, keys in found.items()}


def default_script(code: str) -> str:
  """The script a corpus in language `code` (ISO 639-3) is assumed to use."""
  if code in DEFAULT_SCRIPTS:
    return DEFAULT_SCRIPTS[code]
  scripts = _gflanguages_scripts().get(code)
  if not scripts:
    raise DataError(f"no default script is known for language {code!r}: name it with an "
                    f"ISO 15924 script, e.g. '{code}_Latn'")
  return scripts[0]


@functools.cache
def resolve(tag: str) -> Language:
  """The canonical language of a corpus tag: `sw`, `zh-Hans`, `hi_rom`, `swh_Latn` ..."""
  match = _TAG.match(tag)
  if match is None:
    raise DataError(f"cannot read language tag {tag!r}: write a language code with an "
                    "optional script, e.g. 'sw', 'swh_Latn', 'zh-Hans', 'hi_rom'")
  code = _iso639_3(match["lang"], tag)
  sub = match["sub"]
  if sub is None:
    return Language(code, default_script(code))
  if sub.lower() in SUFFIX_SCRIPTS:
    return Language(code, SUFFIX_SCRIPTS[sub.lower()])
  script = sub.title()
  if not _is_script(script):
    raise DataError(f"unknown script {sub!r} in language tag {tag!r}: use an ISO 15924 "
                    "code such as Latn, Cyrl, Arab, Hans")
  return Language(code, script)
