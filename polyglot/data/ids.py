"""XLM-R's special token ids (fairseq's dictionary order; DESIGN.md), importable without
TensorFlow: `polyglot.data.vocab` builds on them, and the processes that make batches
(`polyglot.data.streams`) read them without loading TensorFlow."""

BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
FIRST_PIECE_ID = 4  # ids below are special: never masked, never drawn as random tokens
