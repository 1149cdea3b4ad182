"""Language metadata of the corpora polyglot registers: their tags -> language ids.

A language id is an ISO 639-3 code and an ISO 15924 script (`swh_Latn`);
`polyglot.data.languages.resolve` turns a corpus's own tag into one (rules
there). The tables here list what each corpus calls its languages.
"""
from __future__ import annotations

from typing import Iterable

from polyglot.data import languages
from polyglot.errors import DataError

# CC-100 (data.statmt.org/cc-100, XLM-R's training data): file `<tag>.txt.xz` per language.
CC100_TAGS = tuple("""
af am ar as az be bg bn bn_rom br bs ca cs cy da de el en eo es et eu fa ff fi fr fy ga gd
gl gn gu ha he hi hi_rom hr ht hu hy id ig is it ja jv ka kk km kn ko ku ky la lg li ln lo
lt lv mg mk ml mn mr ms my my_zaw ne nl no ns om or pa pl ps pt qu rm ro ru sa sc sd si sk
sl so sq sr ss su sv sw ta ta_rom te te_rom th tl tn tr ug uk ur ur_rom uz vi wo xh yi yo
zh-Hans zh-Hant zu
""".split())

# Wikipedia (TFDS `wikipedia/<date>.<code>`) codes that are not the ISO code of
# their language (`als` is Alemannic on Wikipedia, Tosk Albanian in ISO 639-3).
WIKIPEDIA_CODES = {"als": "gsw", "bat-smg": "sgs", "fiu-vro": "vro", "roa-rup": "rup",
                   "zh-classical": "lzh", "zh-min-nan": "nan", "zh-yue": "yue"}


def mc4_tags() -> tuple[str, ...]:
  """mC4's languages: the splits of TFDS `c4/multilingual` (`<tag>`, `<tag>-validation`)."""
  from tensorflow_datasets.text import c4  # pylint: disable=g-import-not-at-top
  return tuple(c4.MC4_LANGUAGES)


def language_ids(tags: Iterable[str], corpus: str) -> dict[str, str]:
  """Language id -> the corpus's tag; a DataError if two tags name one language."""
  ids: dict[str, str] = {}
  for tag in tags:
    lang = languages.resolve(tag).id
    if lang in ids:
      raise DataError(f"{corpus} tags {ids[lang]!r} and {tag!r} are both {lang}: pass one")
    ids[lang] = tag
  return ids
