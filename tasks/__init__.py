"""seqio registrations: one Task per (corpus, language), one Mixture per corpus.

Importing `tasks` registers the embedded corpus as the mixture `embedded`
(the default for demos and tests). Other corpora are registered by one call,
which gin can bind:

    register_text_directory("/data/cc100", name="cc100", alpha=0.3)
    register_tokenized("gs://bucket/cache/cc100")   # written by tools/cache_tasks.py
    register_mc4("/data/tfds", languages=["sw", "zh"])
    register_wikipedia(["sw", "yo"], "/data/tfds")
"""
from tasks.embedded import EMBEDDED, register_embedded
from tasks.parallel import (register_bible, register_moses, register_tfds_translation,
                            register_tsv_pairs)
from tasks.text import register_text_directory, register_tokenized
from tasks.tfds import register_mc4, register_tfds, register_wikipedia

register_embedded()

__all__ = ["EMBEDDED", "register_embedded", "register_text_directory", "register_tokenized",
           "register_tfds",
           "register_mc4", "register_wikipedia", "register_bible", "register_moses",
           "register_tsv_pairs", "register_tfds_translation"]
