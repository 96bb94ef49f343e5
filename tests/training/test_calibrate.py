import numpy as np

from training.calibrate import weak_match_threshold


def test_threshold_is_the_best_score_most_queries_reach():
    rng = np.random.default_rng(0)
    n_img, per = 20, 5
    n_cap = n_img * per
    cap_img = np.repeat(np.arange(n_img), per)
    sims = rng.uniform(0.0, 0.3, size=(n_img, n_cap))
    own = rng.uniform(0.4, 0.8, size=n_cap)
    sims[cap_img, np.arange(n_cap)] = own
    out = weak_match_threshold(sims, cap_img, keep_fraction=0.9)
    # naive reference: each caption's best score, sorted, at the 10% point
    best = sorted(max(sims[i, j] for i in range(n_img)) for j in range(n_cap))
    assert out["weak_match_threshold"] == round(float(np.quantile(best, 0.1)), 4)
    assert out["top1_accuracy"] == 1.0
    assert 0.05 <= out["flagged_when_present"] <= 0.11
    # every other photo scores below 0.3 < threshold: without its own photo, always flagged
    assert out["flagged_when_own_photo_removed"] == 1.0
