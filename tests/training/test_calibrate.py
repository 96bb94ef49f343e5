import numpy as np

from training.calibrate import weak_match_threshold


def naive_quantile(values, q):
    """Linear interpolation between the sorted values around position q * (n - 1)."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def test_threshold_is_the_best_score_most_queries_reach():
    rng = np.random.default_rng(0)
    n_img, per = 20, 5
    n_cap = n_img * per
    cap_img = np.repeat(np.arange(n_img), per)
    sims = rng.uniform(0.0, 0.3, size=(n_img, n_cap))
    own = rng.uniform(0.4, 0.8, size=n_cap)
    sims[cap_img, np.arange(n_cap)] = own
    out = weak_match_threshold(sims, cap_img, keep_fraction=0.9)
    # naive reference: each caption's best score by a loop, then the 10% point by hand
    best = [max(sims[i, j] for i in range(n_img)) for j in range(n_cap)]
    thr = naive_quantile(best, 0.1)
    assert out["weak_match_threshold"] == round(thr, 4)
    assert out["n_queries"] == n_cap and out["n_images"] == n_img
    assert out["top1_accuracy"] == 1.0  # every caption's own photo scores >= 0.4 > 0.3
    assert out["flagged_when_present"] == sum(b < thr for b in best) / n_cap
    assert out["accuracy_when_not_flagged"] == 1.0
    # every other photo scores below 0.3 < threshold: without its own photo, always flagged
    assert out["flagged_when_own_photo_removed"] == 1.0


def test_threshold_between_two_sorted_values():
    # 5 queries whose best hits are 0.1..0.5: the 25% point lies exactly on the second value,
    # the 10% point 40% of the way from the first to the second
    sims = np.diag([0.3, 0.1, 0.5, 0.2, 0.4])
    cap_img = np.arange(5)
    assert weak_match_threshold(sims, cap_img, keep_fraction=0.75)["weak_match_threshold"] == 0.2
    assert weak_match_threshold(sims, cap_img, keep_fraction=0.9)["weak_match_threshold"] == 0.14
    out = weak_match_threshold(sims, cap_img, keep_fraction=0.75)
    assert out["flagged_when_present"] == 0.2  # only the query whose best hit is 0.1
    assert out["top1_accuracy"] == 1.0
