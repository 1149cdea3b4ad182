"""Language tags of every corpus map to ISO 639-3 + script ids."""
import pytest

from polyglot.data import languages
from polyglot.errors import DataError
from tasks import languages as corpus_languages


@pytest.mark.parametrize("tag, expected", [
    ("sw", "swh_Latn"),          # ISO 639-1 macrolanguage -> principal individual language
    ("swh_Latn", "swh_Latn"),    # Glot500-c / UDHR file names
    ("swa", "swa_Latn"),         # an explicit ISO 639-3 code is kept
    ("pt", "por_Latn"),
    ("zh-Hans", "cmn_Hans"),     # CC-100
    ("zh-Hant", "cmn_Hant"),
    ("zh", "cmn_Hans"),
    ("hi_rom", "hin_Latn"),      # CC-100 romanized text
    ("my_zaw", "mya_Qaag"),      # CC-100 Zawgyi-encoded Burmese (CLDR private-use script)
    ("ns", "nso_Latn"),          # CC-100's Northern Sotho
    ("iw", "heb_Hebr"),          # mC4 uses the withdrawn code for Hebrew
    ("pa", "pan_Guru"),          # several scripts: the one web text uses
    ("sr", "srp_Cyrl"),
    ("sr_Latn", "srp_Latn"),
    ("ru-Latn", "rus_Latn"),     # mC4 romanized splits
    ("fil", "fil_Latn"),
])
def test_resolve(tag, expected):
  assert languages.resolve(tag).id == expected


def test_language_name():
  assert languages.resolve("sw").name.startswith("Swahili")


@pytest.mark.parametrize("tag, words", [
    ("xx", ["unknown language code 'xx'", "ISO 639"]),
    ("english", ["cannot read language tag 'english'", "e.g."]),
    ("sw_Lat", ["unknown script 'Lat'", "ISO 15924"]),
    ("und", ["unknown language code 'und'"]),    # ISO's "undetermined" is no language
    ("sw_Zzzx", ["unknown script 'Zzzx'"]),
])
def test_resolve_rejects_bad_tags_in_one_line(tag, words):
  with pytest.raises(DataError) as e:
    languages.resolve(tag)
  assert "\n" not in str(e.value)
  for word in words:
    assert word in str(e.value)


def test_cc100_and_mc4_tags_name_distinct_languages():
  cc100 = corpus_languages.language_ids(corpus_languages.CC100_TAGS, "CC-100")
  mc4 = corpus_languages.language_ids(corpus_languages.mc4_tags(), "mC4")
  assert len(cc100) == len(corpus_languages.CC100_TAGS)
  assert len(mc4) == len(corpus_languages.mc4_tags())
  assert cc100["cmn_Hans"] == "zh-Hans" and cc100["hin_Latn"] == "hi_rom"
  assert mc4["heb_Hebr"] == "iw"


def test_two_tags_of_one_language_are_refused():
  with pytest.raises(DataError, match="'sw' and 'swh_Latn' are both swh_Latn"):
    corpus_languages.language_ids(["sw", "swh_Latn"], "test")
