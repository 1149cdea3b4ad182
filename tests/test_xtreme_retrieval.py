"""Retrieval: cosine nearest neighbours (Tatoeba), margin mining and thresholds (BUCC)."""
import numpy as np
import pytest

from polyglot.errors import DataError
from polyglot.eval import retrieval


def test_knn_orders_by_similarity_across_chunks(monkeypatch):
  monkeypatch.setattr(retrieval, "_ROWS_PER_CHUNK", 2)  # exercise several row blocks
  rng = np.random.default_rng(0)
  q, keys = rng.normal(size=(5, 4)), rng.normal(size=(7, 4))
  sims, idx = retrieval.knn(q, keys, 3)
  full = q @ keys.T
  np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :3])
  np.testing.assert_allclose(sims, np.sort(full, axis=1)[:, ::-1][:, :3], rtol=1e-6)


def test_tatoeba_is_cosine_not_dot_product():
  # English row 0 has the largest dot product with source 1 (long vector) but
  # points exactly along source 0.
  source = np.array([[1.0, 0.0], [10.0, 10.0]])
  english = np.array([[2.0, 0.0], [0.0, 3.0]])
  np.testing.assert_array_equal(retrieval.tatoeba_predictions(source, english), [0, 1])
  assert retrieval.tatoeba_accuracy(source, english) == 100.0
  assert retrieval.tatoeba_accuracy(source, english[::-1]) == 0.0


def test_margin_mining_hand_case():
  # Orthonormal-ish: s0~e0, s1~e1; s2 is a near duplicate of s1 that loses the
  # one-to-one competition for e1.
  x = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.9, 0.1]])
  y = np.array([[1.0, 0.05, 0.0], [0.0, 1.0, 0.0]])
  pairs = retrieval.margin_mine(x, y, k=2)
  assert [(s, t) for s, t, _ in pairs] == [(0, 0), (1, 1)]
  # Ratio margin of (0, 0): cos / mean(mean top-2 cos of x0, mean top-2 cos of y0).
  xn, yn = retrieval.l2_normalize(x), retrieval.l2_normalize(y)
  cos = xn @ yn.T
  fwd_mean = np.sort(cos, axis=1)[:, -2:].mean(axis=1)
  bwd_mean = np.sort(cos.T, axis=1)[:, -2:].mean(axis=1)
  assert pairs[0][2] == pytest.approx(cos[0, 0] / ((fwd_mean[0] + bwd_mean[0]) / 2), rel=1e-5)


def test_threshold_maximises_f1_and_midpoints():
  candidates = {("a", "1"): 1.5, ("b", "2"): 1.4, ("c", "9"): 1.3, ("d", "4"): 1.2,
                ("e", "8"): 1.1}
  gold = {("a", "1"), ("b", "2"), ("d", "4"), ("f", "6")}
  # Cut after 2: P=1 R=.5 F1=.667; after 4: P=.75 R=.75 F1=.75 (best); after 5: F1=.667.
  th = retrieval.optimize_threshold(candidates, gold)
  assert th == pytest.approx((1.2 + 1.1) / 2)
  out = retrieval.bucc_scores(candidates, gold)
  assert out["f1"] == pytest.approx(75.0) and out["threshold"] == th
  # A fixed (dev) threshold is applied as given.
  assert retrieval.bucc_scores(candidates, gold, threshold=1.45)["precision"] == 100.0


def test_threshold_when_best_cut_keeps_everything():
  candidates = {("a", "1"): 2.0, ("b", "2"): 1.0}
  assert retrieval.optimize_threshold(candidates, {("a", "1"), ("b", "2")}) == 1.0


def test_bucc_candidates_map_ids_and_drop_repeated_sentences():
  source_ids = ("zh-1", "zh-2", "zh-3", "zh-4")
  source = ("猫", "狗", "鸟", "狗")  # "狗" twice: no single id, its pairs are dropped
  english_ids = ("en-7", "en-8", "en-9")
  english = ("cat", "dog", "bird")
  emb_src = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 1.0, 0]])
  emb_en = np.array([[1.0, 0.1, 0], [0.1, 1.0, 0], [0, 0.1, 1.0]])
  cands = retrieval.bucc_candidates(source_ids, source, emb_src, english_ids, english, emb_en,
                                    k=2)
  assert set(cands) == {("zh-1", "en-7"), ("zh-3", "en-9")}
  with pytest.raises(DataError, match="one row per sentence"):
    retrieval.bucc_candidates(source_ids, source, emb_src[:3], english_ids, english, emb_en)


def test_unique_rows_keep_first_order_and_last_row():
  # XTREME's text_load_unify orders distinct lines by first occurrence; unique_embeddings
  # ({j: i for i, j in enumerate(ind)}) then takes each one's last row.
  unique_rows = retrieval._unique_rows  # pylint: disable=protected-access
  texts, rows = unique_rows(["a", "b", "a", "c", "b"])
  assert texts == ["a", "b", "c"] and rows == [2, 4, 3]


def test_bucc_repeated_sentence_is_mined_with_its_last_embedding():
  # "b" occurs twice (ids s2, s3) with different embeddings: the last, [0, 1], is mined.
  # Its own pairs are dropped (no single id) but it changes what "a" is paired with.
  source_ids, source = ("s1", "s2", "s3"), ("a", "b", "b")
  emb_src = np.array([[0.8, 0.6], [1.0, 0.0], [0.0, 1.0]])
  english_ids, english = ("e1", "e2"), ("x", "y")
  emb_en = np.array([[1.0, 0.0], [0.0, 1.0]])
  cands = retrieval.bucc_candidates(source_ids, source, emb_src, english_ids, english, emb_en,
                                    k=2)
  # Mined rows a=[.8, .6], b=[0, 1]; cos(a,x)=.8, cos(a,y)=.6, cos(b,x)=0, cos(b,y)=1.
  # k=2 covers every row: mean cos of a .7, of b .5, of x .4, of y .8. (b, y) scores
  # 1 / ((.5 + .8) / 2) = 1.538 and wins first; (a, x) scores .8 / ((.7 + .4) / 2) = 16/11.
  assert cands == {("s1", "e1"): pytest.approx(16 / 11, rel=1e-6)}
  # The two rows of "b" swapped: now [1, 0] is last; b takes x (mean cos of x .9, of y .3)
  # and a is left with y: .6 / ((.7 + .3) / 2) = 1.2 for (s1, e2).
  swapped = retrieval.bucc_candidates(source_ids, source, emb_src[[0, 2, 1]], english_ids,
                                      english, emb_en, k=2)
  assert swapped == {("s1", "e2"): pytest.approx(1.2, rel=1e-6)}


def test_rank_pool_ranks_candidate_ids_by_cosine():
  rng = np.random.default_rng(1)
  queries, pool = rng.normal(size=(4, 5)), rng.normal(size=(6, 5)) * rng.uniform(1, 9, (6, 1))
  ids = [f"c{i}" for i in range(6)]
  cos = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
      pool / np.linalg.norm(pool, axis=1, keepdims=True)).T
  want = [[ids[j] for j in np.argsort(-row)[:3]] for row in cos]
  assert retrieval.rank_pool(queries, pool, ids, 3) == want
  assert [len(r) for r in retrieval.rank_pool(queries, pool, ids, 20)] == [6] * 4  # k > pool
  with pytest.raises(DataError, match=r"candidate embeddings have shape \(6, 5\); expected \[5"):
    retrieval.rank_pool(queries, pool, ids[:5], 3)


def test_merged_pools_share_candidates_and_group_relevance():
  from polyglot.eval.readers import Candidate, Query, RetrievalSet, merge_retrieval_sets
  en = RetrievalSet((Query("q_en", "en", "Who?", frozenset({"en_1"}), "q"),
                     Query("m", "en", "x", frozenset({"E"}))),
                    (Candidate("en_1", "en", "He."), Candidate("E", "en", "An entity.")))
  de = RetrievalSet((Query("q_de", "de", "Wer?", frozenset({"de_1"}), "q"),),
                    (Candidate("de_1", "de", "Er."), Candidate("E", "en", "An entity.")))
  merged = merge_retrieval_sets([en, de], "here")
  assert [c.id for c in merged.candidates] == ["en_1", "E", "de_1"]
  assert [q.relevant for q in merged.queries] == [{"en_1", "de_1"}, {"E"}, {"en_1", "de_1"}]
  # A group's candidate cut from the pool is not relevant (smoke runs cut pools).
  cut = merge_retrieval_sets([en, RetrievalSet(de.queries, ())], "here")
  assert cut.queries[2].relevant == {"en_1"}
  with pytest.raises(DataError, match="here: query 'q_de' has relevant candidates"):
    merge_retrieval_sets([RetrievalSet(de.queries, ())], "here")
