import numpy as np
import pytest

from training.metrics import metrics_from_embeddings, retrieval_metrics


def naive(sims, cap_img):
    n_img, n_cap = sims.shape
    i2t, t2i = [], []
    for i in range(n_img):
        order = sorted(range(n_cap), key=lambda j: (-sims[i, j], cap_img[j] == i))  # ties: wrong first
        i2t.append(min(order.index(j) for j in range(n_cap) if cap_img[j] == i))
    for j in range(n_cap):
        order = sorted(range(n_img), key=lambda i: (-sims[i, j], i == cap_img[j]))
        t2i.append(order.index(cap_img[j]))

    def summ(r):
        r = np.array(r)
        return {"r1": 100 * np.mean(r < 1), "r5": 100 * np.mean(r < 5), "r10": 100 * np.mean(r < 10),
                "medr": np.floor(np.median(r)) + 1, "meanr": r.mean() + 1}
    return summ(i2t), summ(t2i)


def check(sims, cap_img):
    m = retrieval_metrics(sims, cap_img)
    a, b = naive(sims, cap_img)
    for k in a:
        assert m["i2t"][k] == pytest.approx(a[k])
        assert m["t2i"][k] == pytest.approx(b[k])
    rsum = sum(a[k] + b[k] for k in ("r1", "r5", "r10"))
    assert m["rsum"] == pytest.approx(rsum)
    return m


def test_hand_made_perfect_and_worst():
    # 3 images x 2 captions each; perfect diagonal-block similarities
    cap_img = [0, 0, 1, 1, 2, 2]
    sims = np.array([[9, 8, 0, 0, 0, 0], [0, 0, 9, 8, 0, 0], [0, 0, 0, 0, 9, 8]], float)
    m = check(sims, cap_img)
    assert m["rsum"] == 600 and m["i2t"]["medr"] == 1
    # image 0's captions ranked last for image 0
    sims2 = sims.copy()
    sims2[0] = [0, 1, 9, 8, 7, 6]
    m2 = check(sims2, cap_img)
    assert m2["i2t"]["r1"] == pytest.approx(200 / 3)
    # captions 0, 2, 3 tie between their image and another: counted as misses
    assert m2["t2i"]["r1"] == pytest.approx(50.0)


def test_hand_made_ranks():
    cap_img = [0, 1, 2, 3]
    sims = np.array(
        [[0.1, 0.9, 0.2, 0.3], [0.5, 0.4, 0.8, 0.0], [0.9, 0.1, 0.7, 0.2], [0.2, 0.3, 0.1, 0.6]]
    )
    m = check(sims, cap_img)
    # caption 0's image (row 0) scores 0.1: beaten by rows 1, 2, 3 -> rank 4
    assert m["t2i"]["meanr"] == pytest.approx(np.mean([4, 2, 2, 1]))


def test_random_matches_naive():
    rng = np.random.default_rng(0)
    for n in (7, 12):
        cap_img = np.repeat(np.arange(n), 5)
        check(rng.standard_normal((n, 5 * n)), cap_img)


def test_five_fold_averages_folds():
    rng = np.random.default_rng(1)
    n, d = 50, 16
    img = rng.standard_normal((n, d))
    cap_img = np.repeat(np.arange(n), 5)
    txt = img[cap_img] + 1.5 * rng.standard_normal((5 * n, d))
    m = metrics_from_embeddings(img, txt, cap_img, folds=5)
    folds = []
    for f in range(5):
        sl = slice(f * 10, (f + 1) * 10)
        folds.append(check(img[sl] @ txt[f * 50 : (f + 1) * 50].T, cap_img[f * 50 : (f + 1) * 50] - f * 10))
    assert m["rsum"] == pytest.approx(np.mean([r["rsum"] for r in folds]))
    assert m["t2i"]["r1"] == pytest.approx(np.mean([r["t2i"]["r1"] for r in folds]))
    assert m["folds"] == 5
