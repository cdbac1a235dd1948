"""Retrieval metrics: Recall@K by hand, the ITC shortlist + ITM re-rank, feature assembly."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bridgetower_jax.metrics import retrieval

# 3 images, 5 texts; texts 0, 1 describe image 0, texts 2, 3 image 1, text 4 image 2.
SCORES = np.array([[0.9, 0.1, 0.8, 0.2, 0.3],
                   [0.5, 0.6, 0.4, 0.7, 0.5],
                   [0.9, 0.2, 0.1, 0.0, 0.9]])
TEXT_TO_IMAGE = np.array([0, 0, 1, 1, 2])


def test_recall_at_k_hand_computed_with_ties():
    # TR ranks (best own text per image): image 0 -> text 0 first (0); image 1 -> text 3 first
    # (0); image 2 -> text 4 ties text 0 at 0.9 and the lower index wins, so rank 1.
    # IR ranks (own image per text): text 0 ties images 0 and 2, image 0 wins (0); text 1: image 0
    # is third (2); text 2: second (1); text 3: first (0); text 4: first (0).
    r = retrieval.recall_at_k(SCORES, TEXT_TO_IMAGE, ks=(1, 2, 3))
    expected = {"tr_r1": 2 / 3, "tr_r2": 1.0, "tr_r3": 1.0, "ir_r1": 3 / 5, "ir_r2": 4 / 5, "ir_r3": 1.0}
    for key, value in expected.items():
        assert r[key] == pytest.approx(value), key
    assert r["tr_mean"] == pytest.approx(8 / 9)
    assert r["ir_mean"] == pytest.approx(0.8)
    assert r["r_mean"] == pytest.approx((8 / 9 + 0.8) / 2)
    assert r["rsum"] == pytest.approx(2 / 3 + 2 + 0.6 + 0.8 + 1)


def test_recall_at_k_default_ks_and_image_without_text():
    scores = np.concatenate([SCORES, np.full((1, 5), 9.0)])  # image 3 has no text: always a miss
    r = retrieval.recall_at_k(scores, TEXT_TO_IMAGE)
    assert set(r) == {"tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10",
                      "tr_mean", "ir_mean", "r_mean", "rsum"}
    assert r["tr_r10"] == pytest.approx(3 / 4)
    assert r["ir_r1"] == 0.0  # image 3 outscores every text's own image
    assert r["ir_r5"] == 1.0


def _ranks_by_stable_sort(scores, text_to_image):
    order_t = np.argsort(-scores, axis=1, kind="stable")
    tr = [np.flatnonzero(np.isin(order_t[i], np.flatnonzero(text_to_image == i)))[0]
          for i in range(len(scores))]
    order_i = np.argsort(-scores.T, axis=1, kind="stable")
    ir = [int(np.flatnonzero(order_i[t] == text_to_image[t])[0]) for t in range(scores.shape[1])]
    return np.array(tr), np.array(ir)


@pytest.mark.parametrize("block", [1024, 4])  # 4: ranks are computed over several row/column blocks
def test_recall_at_k_matches_a_stable_sort_on_a_tie_heavy_matrix(block, monkeypatch):
    monkeypatch.setattr(retrieval, "_RANK_BLOCK", block)
    rng = np.random.default_rng(0)
    text_to_image = np.repeat(np.arange(6), 3)
    scores = rng.integers(0, 3, size=(6, 18)).astype(np.float32)  # many ties
    tr, ir = _ranks_by_stable_sort(scores, text_to_image)
    r = retrieval.recall_at_k(scores, text_to_image, ks=(1, 2, 4))
    for k in (1, 2, 4):
        assert r[f"tr_r{k}"] == pytest.approx(np.mean(tr < k))
        assert r[f"ir_r{k}"] == pytest.approx(np.mean(ir < k))


def test_recall_at_k_rejects_bad_inputs():
    with pytest.raises(ValueError, match="texts"):
        retrieval.recall_at_k(SCORES, TEXT_TO_IMAGE[:4])
    with pytest.raises(ValueError, match="outside"):
        retrieval.recall_at_k(SCORES, np.array([0, 0, 1, 1, 3]))
    with pytest.raises(ValueError, match="NaN"):
        retrieval.recall_at_k(np.where(SCORES > 0.85, np.nan, SCORES), TEXT_TO_IMAGE)


# ---- ITC shortlist + ITM re-rank ----------------------------------------------------------------

# ITC: image 0 = (1, 0), image 1 = (0, 1); texts (1, 0), (0.6, 0.8), (0, 1).
IMAGES = np.array([[1.0, 0.0], [0.0, 1.0]])
TEXTS = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])   # ITC = [[1, .6, 0], [0, .8, 1]]
ITM = np.array([[2.0, 5.0, -3.0], [1.0, 4.0, 6.0]])      # text 1 really matches image 0
RETRIEVAL_TEXT_TO_IMAGE = np.array([0, 0, 1])


class LookupItm:
    """A fake ITM head: reads the logit from a matrix, records every chunk it is given."""

    def __init__(self, matrix):
        self.matrix = matrix
        self.chunks = []

    def __call__(self, image_ids, text_ids, valid):
        self.chunks.append((image_ids.copy(), text_ids.copy(), valid.copy()))
        return self.matrix[image_ids, text_ids]

    def scored_pairs(self):
        return [(int(i), int(t)) for ii, tt, vv in self.chunks for i, t, v in zip(ii, tt, vv) if v]


def test_k_test_one_by_hand():
    # i2t shortlists: image 0 -> text 0, image 1 -> text 2. t2i: text 0 -> image 0, text 1 ->
    # image 1 (0.8 > 0.6), text 2 -> image 1. Everything else keeps the original's -100.
    itm = LookupItm(ITM)
    scores = retrieval.itc_then_itm_scores(IMAGES, TEXTS, itm, k_test=1, chunk_size=2)
    np.testing.assert_array_equal(scores, [[2.0, -100.0, -100.0], [-100.0, 4.0, 6.0]])
    assert scores.dtype == np.float32
    assert sorted(itm.scored_pairs()) == [(0, 0), (1, 1), (1, 2)]  # pairs in both lists scored once


def test_rerank_changes_the_ranking():
    # By ITC, text 1's best image is image 1 (a miss); with both images short-listed the ITM head
    # (5 > 4) puts image 0 first.
    itc = retrieval.recall_at_k(retrieval.similarity_matrix(IMAGES, TEXTS), RETRIEVAL_TEXT_TO_IMAGE, ks=(1,))
    reranked = retrieval.itc_then_itm_scores(IMAGES, TEXTS, LookupItm(ITM), k_test=2, chunk_size=4)
    assert itc["ir_r1"] == pytest.approx(2 / 3)
    assert retrieval.recall_at_k(reranked, RETRIEVAL_TEXT_TO_IMAGE, ks=(1,))["ir_r1"] == 1.0


@pytest.mark.parametrize("k_test", [3, 100])
def test_k_test_at_least_n_gives_the_itm_matrix(k_test):
    itm = LookupItm(ITM)
    scores = retrieval.itc_then_itm_scores(IMAGES, TEXTS, itm, k_test=k_test, chunk_size=4)
    np.testing.assert_array_equal(scores, ITM)
    assert len(itm.scored_pairs()) == ITM.size


def test_max_merge_matches_the_original_below_the_fill_value():
    # A pair in one list only competes with -100 there; a pair in both keeps its logit.
    itm = ITM.copy()
    itm[1, 1] = -200.0  # only in the t2i list at k_test=1
    itm[1, 2] = -300.0  # in both lists
    scores = retrieval.itc_then_itm_scores(IMAGES, TEXTS, LookupItm(itm), k_test=1)
    np.testing.assert_array_equal(scores, [[2.0, -100.0, -100.0], [-100.0, -100.0, -300.0]])


def test_chunks_have_a_fixed_shape_and_a_padding_mask():
    itm = LookupItm(ITM)
    retrieval.itc_then_itm_scores(IMAGES, TEXTS, itm, k_test=3, chunk_size=4)  # 6 pairs -> 4 + 4
    assert [c[0].shape for c in itm.chunks] == [(4,), (4,)]
    assert [c[2].tolist() for c in itm.chunks] == [[True] * 4, [True, True, False, False]]
    assert itm.chunks[1][0].dtype == np.int32


def test_sharded_jitted_itm_function_compiles_once():
    # The caller's pattern: chunk ids sharded over every device, one compilation for all chunks.
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    rng = np.random.default_rng(1)
    images, texts = rng.normal(size=(5, 4)), rng.normal(size=(7, 4))
    big_itm = rng.normal(size=(5, 7))
    table = jnp.asarray(big_itm, jnp.float32)
    traces = []

    @jax.jit
    def positive_logits(image_ids, text_ids, valid):
        traces.append(1)
        return jnp.where(valid, table[image_ids, text_ids], 0.0)

    def itm_score_fn(image_ids, text_ids, valid):
        return positive_logits(*(jax.device_put(x, sharding) for x in (image_ids, text_ids, valid)))

    chunk = jax.device_count()
    scores = retrieval.itc_then_itm_scores(images, texts, itm_score_fn, k_test=7, chunk_size=chunk)
    np.testing.assert_allclose(scores, big_itm, rtol=1e-6)
    assert len(traces) == 1


class SharedImageLookupItm(LookupItm):
    """The fake ITM head for segments: each of the C / P images serves P consecutive rows."""

    def __call__(self, image_ids, text_ids, valid):
        self.chunks.append((image_ids.copy(), text_ids.copy(), valid.copy()))
        return self.matrix[np.repeat(image_ids, len(text_ids) // len(image_ids)), text_ids]

    def scored_pairs(self):
        return [(int(i), int(t)) for ii, tt, vv in self.chunks
                for i, t, v in zip(np.repeat(ii, len(tt) // len(ii)), tt, vv) if v]


@pytest.mark.parametrize("k_test,texts_per_image,chunk_size", [(1, 2, 4), (2, 2, 2), (3, 3, 6), (100, 4, 8)])
def test_images_shared_by_segments_of_texts_give_the_same_scores(k_test, texts_per_image, chunk_size):
    rng = np.random.default_rng(k_test)
    images, texts, itm = rng.normal(size=(5, 3)), rng.normal(size=(9, 3)), rng.normal(size=(5, 9))
    plain = retrieval.itc_then_itm_scores(images, texts, LookupItm(itm), k_test=k_test, chunk_size=chunk_size)
    shared = SharedImageLookupItm(itm)
    grouped = retrieval.itc_then_itm_scores(images, texts, shared, k_test=k_test, chunk_size=chunk_size,
                                            texts_per_image=texts_per_image)
    np.testing.assert_array_equal(grouped, plain)
    for image_ids, text_ids, valid in shared.chunks:
        assert image_ids.shape == (chunk_size // texts_per_image,) and text_ids.shape == valid.shape == (chunk_size,)
    pairs = shared.scored_pairs()
    assert len(pairs) == len(set(pairs)) == int((plain != retrieval.NOT_RERANKED).sum())


def test_segment_length_chosen_from_the_pairs_of_each_image():
    seen = []

    def choose(pairs_per_image):
        seen.append(pairs_per_image.tolist())
        return 2
    shared = SharedImageLookupItm(ITM)
    scores = retrieval.itc_then_itm_scores(IMAGES, TEXTS, shared, k_test=1, chunk_size=4, texts_per_image=choose)
    np.testing.assert_array_equal(scores, [[2.0, -100.0, -100.0], [-100.0, 4.0, 6.0]])
    assert seen == [[1, 2]]
    # Image 0's one pair is padded to a segment of 2; image 1's two pairs fill the next one.
    assert [c[0].tolist() for c in shared.chunks] == [[0, 1]]
    assert [c[1].tolist() for c in shared.chunks] == [[0, 0, 1, 2]]
    assert [c[2].tolist() for c in shared.chunks] == [[True, False, True, True]]


def test_cheapest_texts_per_image_by_hand():
    # Pairs per image 5 and 3, chunk 8. P = 8: 2 segments, 16 rows; 4: 3 and 12; 2: 5 and 10; 1: 8 and 8.
    assert retrieval.cheapest_texts_per_image([5, 3, 0], 8, image_cost=0.0) == 1
    assert retrieval.cheapest_texts_per_image([5, 3], 8, image_cost=10.0) == 8      # 36 < 42 < 60 < 88
    assert retrieval.cheapest_texts_per_image([5, 3], 8, image_cost=1.0) == 2       # 15 (ties with 4) < 16 < 18
    assert retrieval.cheapest_texts_per_image([5, 3], 8, 10.0, images_multiple_of=2) == 4
    # Pairs in any order come back in that order.
    for p in (1, 2):
        logits = retrieval.score_pairs(np.array([1, 0, 1, 0]), np.array([2, 0, 1, 1]), SharedImageLookupItm(ITM), 2,
                                       texts_per_image=p)
        np.testing.assert_array_equal(logits, [6.0, 2.0, 4.0, 5.0])
    with pytest.raises(ValueError, match="chunk_size=6 must be a positive multiple of texts_per_image=4"):
        retrieval.score_pairs(np.array([0]), np.array([0]), LookupItm(ITM), 6, texts_per_image=4)


def test_rows_by_index_orders_rows_and_drops_padding():
    rows = np.array([[2.0], [0.0], [1.0], [9.0]])
    indices = np.array([2, 0, 1, 0])        # the last row is padding pointing at record 0
    out = retrieval.rows_by_index(rows, indices, example_mask=np.array([1, 1, 1, 0]))
    np.testing.assert_array_equal(out, [[0.0], [1.0], [2.0]])
    with pytest.raises(ValueError, match="repeated"):
        retrieval.rows_by_index(rows, indices)
    with pytest.raises(ValueError, match="missing"):
        retrieval.rows_by_index(rows[:2], indices[:2], num_rows=3)
