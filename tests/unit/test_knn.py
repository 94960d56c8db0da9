"""routing.knn on hand-placed embeddings: neighbours, leave-one-out, the choice of k."""

from __future__ import annotations

import numpy as np
import pytest

from tierflow.routing.knn import fit_knn, leave_one_out_apgr, nearest

# Two clusters on the unit circle: around (1, 0) only large is right (gain +1); around
# (0, 1) both are right (gain 0). A seventh point sits between, nearer the second cluster.
ANGLES = np.array([0.0, 0.1, -0.1, 1.57, 1.47, 1.67])
EMBEDDING = np.column_stack([np.cos(ANGLES), np.sin(ANGLES)])
SMALL = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
LARGE = np.ones(6)


def test_nearest_orders_by_cosine_and_can_leave_a_row_out() -> None:
    unit = EMBEDDING.astype(np.float32)
    assert nearest(unit[:1], unit, 3).tolist() == [[0, 1, 2]]
    # Rows 1 and 2 are equally near row 0; without itself row 0's neighbours are 1 and 2.
    assert sorted(nearest(unit, unit, 2, exclude_self=True)[0].tolist()) == [1, 2]
    assert 0 not in nearest(unit, unit, 5, exclude_self=True)[0]


def test_scores_are_the_mean_gain_of_the_k_nearest_training_prompts() -> None:
    router = fit_knn(EMBEDDING * 3.0, SMALL, LARGE, ks=(2,))  # lengths do not matter
    assert router.k == 2
    queries = np.array([[1.0, 0.05], [0.05, 1.0], [np.cos(0.9), np.sin(0.9)]])
    # The third query's two nearest are rows 4 (angle 1.47) and 3 (1.57): gain 0.
    assert router.scores(queries) == pytest.approx([1.0, 0.0, 0.0])


def test_k_is_chosen_by_leave_one_out_apgr_on_the_training_rows() -> None:
    # With k = 2 every row's neighbours but itself are its own cluster: a perfect ranking.
    # With k = 5 each row also averages the other cluster's three: still ranked, but
    # (2 x 1 + 3 x 0) / 5 = 0.4 against (2 x 0 + 3 x 1) / 5 = 0.6 inverts it.
    apgr = leave_one_out_apgr(EMBEDDING.astype(np.float32), SMALL, LARGE, (2, 5))
    assert apgr[2] > apgr[5]
    assert fit_knn(EMBEDDING, SMALL, LARGE, ks=(2, 5)).k == 2


def test_graded_gains_rank_by_how_much_large_gains() -> None:
    small = np.array([0.1, 0.2, 0.1, 0.6, 0.5, 0.7])
    large = np.array([0.9, 0.8, 0.9, 0.7, 0.6, 0.7])
    router = fit_knn(EMBEDDING, small, large, ks=(3,))
    first, second = router.scores(np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert first == pytest.approx((0.8 + 0.6 + 0.8) / 3)
    assert second == pytest.approx((0.1 + 0.1 + 0.0) / 3)


def test_too_few_rows_or_no_embedding_is_refused() -> None:
    with pytest.raises(ValueError, match="two or more"):
        fit_knn(EMBEDDING[:1], SMALL[:1], LARGE[:1])
    with pytest.raises(ValueError, match="two or more"):
        fit_knn(np.zeros((6, 0)), SMALL, LARGE)
