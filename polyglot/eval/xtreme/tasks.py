"""XTREME (Hu et al., 2020): its nine tasks, their data layouts, its averaging.

Two on-disk layouts are recognised by file name alone:

| task | XTREME `scripts/download_data.sh` | shared-data layout (`../shared/data`) |
|---|---|---|
| xnli, pawsx | `xnli/{split}-{lang}.tsv` | same names (dev only) |
| udpos | `udpos/{split}-{lang}.tsv` | `udpos/{lang}_{treebank}-ud-{split}.conllu` |
| panx | `panx/{split}-{lang}.tsv` | `ner/conll2003_en/{split}.txt`, |
| | | `ner/masakhaner2/{lang}.{split}.txt` |
| xquad | `xquad/xquad.{lang}.json` + `squad/train-v1.1.json` | same |
| mlqa | `mlqa/MLQA_V1/{split}/{split}-context-{lang}-question-{lang}.json` | same file names |
| tydiqa | `tydiqa/*/tydiqa.{lang}.{split}.json` | `tydiqa/tydiqa.goldp.{lang}.{split}.json` |
| bucc2018 | `bucc2018/{lang}-en.{split}.{lang,en,gold}` | same |
| tatoeba | `tatoeba/{lang}-en.{lang,en}` | `tatoeba/tatoeba.{xxx}-eng.{xxx,eng}` (LASER) |

XTREME's task lists, categories and metrics: `evaluate.py` (TASK2LANGS,
GROUP2TASK, METRIC_FUNCTION) in google-research/xtreme.
"""
from polyglot.eval.benchmarks import Benchmark
from polyglot.eval.tasks import ANY_DIR, LANG, SPLITS, FileLayout, TaskSpec, TfdsSplit

# LASER's Tatoeba file names use ISO 639-3; XTREME reports ISO 639-1 (the
# `lang3_dict` of XTREME's `third_party/run_retrieval.py`). Other codes are kept.
LASER_TO_XTREME = {
    "afr": "af", "ara": "ar", "ben": "bn", "bul": "bg", "cmn": "zh", "deu": "de", "ell": "el",
    "est": "et", "eus": "eu", "fin": "fi", "fra": "fr", "heb": "he", "hin": "hi", "hun": "hu",
    "ind": "id", "ita": "it", "jav": "jv", "jpn": "ja", "kat": "ka", "kaz": "kk", "kor": "ko",
    "mal": "ml", "mar": "mr", "nld": "nl", "pes": "fa", "por": "pt", "rus": "ru", "spa": "es",
    "swh": "sw", "tam": "ta", "tel": "te", "tgl": "tl", "tha": "th", "tur": "tr", "urd": "ur",
    "vie": "vi",
}


def _tsv_pairs(folder: str, fmt: str) -> tuple[FileLayout, ...]:
  return (FileLayout(folder, rf"{ANY_DIR}(?P<split>train|dev|test)-{LANG}\.tsv", fmt),)


def _tag_tsv(folder: str) -> FileLayout:
  return FileLayout(folder, rf"{ANY_DIR}(?P<split>train|dev|test)-{LANG}\.tsv", "tag_text")


# XTREME trains XQuAD and MLQA on SQuAD v1.1 (README, "XQuAD, MLQA, TyDiQA-GoldP").
_SQUAD_TRAIN = FileLayout("squad", rf"{ANY_DIR}train-v1\.1\.json", "squad_json", lang="en",
                          split="train")
_SQUAD_TFDS_TRAIN = TfdsSplit("squad/v1.1", "train", "tfds_squad", lang="en")

# Label sets in the order of XTREME's label files: XnliProcessor/PawsxProcessor
# `get_labels`, and the sorted `labels.txt` of scripts/preprocess_{udpos,panx}.sh.
XNLI_LABELS = ("contradiction", "entailment", "neutral")
PAWSX_LABELS = ("0", "1")
UPOS_LABELS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
               "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X")
PANX_LABELS = ("B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O")


def _langs(s: str) -> tuple[str, ...]:
  return tuple(s.split(","))


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec(
        "xnli", "classification", "accuracy",
        _langs("ar,bg,de,el,en,es,fr,hi,ru,sw,th,tr,ur,vi,zh"),
        _tsv_pairs("xnli", "pair_tsv"),
        {"train": TfdsSplit("xtreme_xnli", "train", "tfds_xnli", lang="en"),
         "dev": TfdsSplit("xnli", "validation", "tfds_xnli"),
         "test": TfdsSplit("xnli", "test", "tfds_xnli")},
        labels=XNLI_LABELS),
    TaskSpec(
        "pawsx", "classification", "accuracy", _langs("de,en,es,fr,ja,ko,zh"),
        _tsv_pairs("pawsx", "pawsx_tsv"),
        # `xtreme_pawsx` holds only machine-translated training data (no English,
        # no dev/test): the zero-shot data is in `paws_x_wiki`.
        {"train": TfdsSplit("paws_x_wiki/en", "train", "tfds_pair", lang="en"),
         "dev": TfdsSplit("paws_x_wiki/{lang}", "validation", "tfds_pair"),
         "test": TfdsSplit("paws_x_wiki/{lang}", "test", "tfds_pair")},
        labels=PAWSX_LABELS),
    TaskSpec(
        "udpos", "tagging", "seqeval_f1",
        _langs("af,ar,bg,de,el,en,es,et,eu,fa,fi,fr,he,hi,hu,id,it,ja,kk,ko,mr,nl,pt,ru,ta,te,"
               "th,tl,tr,ur,vi,yo,zh"),
        (_tag_tsv("udpos"),
         FileLayout("udpos", rf"{ANY_DIR}{LANG}_[a-z0-9]+-ud-(?P<split>train|dev|test)\.conllu",
                    "conllu")),
        {split: TfdsSplit(f"xtreme_pos/xtreme_pos_{'en' if split == 'train' else '{lang}'}",
                          split, "tfds_upos", lang="en" if split == "train" else None)
         for split in SPLITS},
        labels=UPOS_LABELS),
    TaskSpec(
        "panx", "tagging", "seqeval_f1",
        _langs("ar,he,vi,id,jv,ms,tl,eu,ml,ta,te,af,nl,en,de,el,bn,hi,mr,ur,fa,fr,it,pt,es,bg,"
               "ru,ja,ka,ko,th,sw,yo,my,zh,kk,tr,et,fi,hu"),
        (_tag_tsv("panx"),
         FileLayout("ner", rf"{ANY_DIR}[a-z0-9]+_{LANG}/(?P<split>train|dev|test)\.txt",
                    "tag_text"),
         FileLayout("ner", rf"{ANY_DIR}{LANG}\.(?P<split>train|dev|test)\.txt", "tag_text")),
        {"train": TfdsSplit("wikiann/en", "train", "tfds_wikiann", lang="en"),
         "dev": TfdsSplit("wikiann/{lang}", "validation", "tfds_wikiann"),
         "test": TfdsSplit("wikiann/{lang}", "test", "tfds_wikiann")},
        labels=PANX_LABELS),
    TaskSpec(
        "xquad", "qa", "squad", _langs("en,es,de,el,ru,tr,ar,vi,th,zh,hi"),
        (FileLayout("xquad", rf"{ANY_DIR}xquad\.{LANG}\.json", "squad_json", split="test"),
         _SQUAD_TRAIN),
        {"train": _SQUAD_TFDS_TRAIN, "test": TfdsSplit("xquad/{lang}", "test", "tfds_squad")}),
    TaskSpec(
        "mlqa", "qa", "mlqa", _langs("en,es,de,ar,hi,vi,zh"),
        (FileLayout("mlqa", rf"{ANY_DIR}(?P<split>dev|test)-context-{LANG}-question-(?P=lang)"
                    r"\.json", "squad_json"),
         _SQUAD_TRAIN),
        {"train": _SQUAD_TFDS_TRAIN,
         "dev": TfdsSplit("mlqa/{lang}", "validation", "tfds_squad"),
         "test": TfdsSplit("mlqa/{lang}", "test", "tfds_squad")}),
    TaskSpec(
        "tydiqa", "qa", "squad", _langs("en,ar,bn,fi,id,ko,ru,sw,te"),
        (FileLayout("tydiqa", rf"{ANY_DIR}tydiqa\.(?:goldp\.)?{LANG}\.(?P<split>train|dev)\.json",
                    "squad_json"),),
        # XTREME trains on the English part of TyDi QA GoldP (utils_preprocess.py
        # splits the train file by the language prefix of each question id).
        {"train": TfdsSplit("tydi_qa/goldp", "train", "tfds_squad", lang="en",
                            id_prefix="english-"),
         "dev": TfdsSplit("tydi_qa/goldp", "validation-{lang}", "tfds_squad")}),
    TaskSpec(
        "bucc2018", "retrieval", "bucc_f1", _langs("de,fr,ru,zh"),
        (FileLayout("bucc2018", rf"(?P<base>{ANY_DIR}{LANG}-en\.(?P<split>dev|test))\.(?P=lang)",
                    "bucc_text", partners=(r"\g<base>.en", r"\g<base>.gold")),),
        {"dev": TfdsSplit("bucc/bucc_{lang}", "validation", "tfds_bucc"),
         "test": TfdsSplit("bucc/bucc_{lang}", "test", "tfds_bucc")}),
    TaskSpec(
        "tatoeba", "retrieval", "accuracy",
        _langs("ar,he,vi,id,jv,tl,eu,ml,ta,te,af,nl,de,el,bn,hi,mr,ur,fa,fr,it,pt,es,bg,ru,ja,"
               "ka,ko,th,sw,zh,kk,tr,et,fi,hu"),
        (FileLayout("tatoeba", rf"(?P<base>{ANY_DIR}tatoeba\.{LANG}-eng)\.(?P=lang)",
                    "tatoeba_text", split="test", partners=(r"\g<base>.eng",), lang_codes=LASER_TO_XTREME),
         FileLayout("tatoeba", rf"(?P<base>{ANY_DIR}{LANG}-en)\.(?P=lang)", "tatoeba_text",
                    split="test", partners=(r"\g<base>.en",))),
        # The TFDS builder exposes LASER's test files as its `train` split.
        {"test": TfdsSplit("tatoeba/tatoeba_{lang}", "train", "tfds_tatoeba")}),
)}


CATEGORIES = {  # XTREME paper, table 1
    "xnli": "Sentence classification", "pawsx": "Sentence classification",
    "udpos": "Structured prediction", "panx": "Structured prediction",
    "xquad": "Question answering", "mlqa": "Question answering", "tydiqa": "Question answering",
    "bucc2018": "Sentence retrieval", "tatoeba": "Sentence retrieval",
}

BENCHMARK = Benchmark(
    name="xtreme", title="XTREME", tasks=TASKS, gin_file="eval/xtreme.gin",
    categories=CATEGORIES,
    score_note=("Scores: accuracy (XNLI, PAWS-X, Tatoeba), F1 (UD-POS, PAN-X, BUCC), "
                "mean of exact match and F1 (XQuAD, MLQA, TyDi QA); percent."))
