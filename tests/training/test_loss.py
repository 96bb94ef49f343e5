import torch

from training.loss import ContrastiveLoss


def naive_loss(im, s, margin, max_violation):
    n = im.shape[0]
    scores = im @ s.t()
    total = torch.tensor(0.0, dtype=scores.dtype)
    for i in range(n):
        # image i as query: captions j != i are negatives
        costs_s = [max(0.0, margin + scores[i, j] - scores[i, i]) for j in range(n) if j != i]
        # caption i as query: images j != i are negatives
        costs_im = [max(0.0, margin + scores[j, i] - scores[i, i]) for j in range(n) if j != i]
        if max_violation:
            total += max(costs_s) + max(costs_im)
        else:
            total += sum(costs_s) + sum(costs_im)
    return total


def test_loss_matches_naive_loop_mh_and_sh():
    g = torch.Generator().manual_seed(0)
    for trial in range(5):
        n, d = 3 + trial * 2, 8
        im = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
        s = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
        for mv in (True, False):
            for margin in (0.2, 0.5):
                got = ContrastiveLoss(margin, mv)(im, s)
                want = naive_loss(im, s, margin, mv)
                torch.testing.assert_close(got, want)


def test_loss_zero_when_positives_win_by_the_margin():
    im = torch.eye(4)
    assert float(ContrastiveLoss(0.2, True)(im, im)) == 0.0
    assert float(ContrastiveLoss(0.2, False)(im, im)) == 0.0


def test_mh_never_exceeds_sh_and_gradients_flow():
    im = torch.randn(6, 5, requires_grad=True)
    s = torch.randn(6, 5)
    mh = ContrastiveLoss(0.2, True)(im, s)
    sh = ContrastiveLoss(0.2, False)(im, s)
    assert mh <= sh + 1e-6
    mh.backward()
    assert im.grad is not None and im.grad.abs().sum() > 0


def test_infonce_matches_naive_softmax():
    import math

    from training.loss import InfoNCELoss

    g = torch.Generator().manual_seed(1)
    im = torch.nn.functional.normalize(torch.randn(5, 6, generator=g, dtype=torch.float64), dim=1)
    s = torch.nn.functional.normalize(torch.randn(5, 6, generator=g, dtype=torch.float64), dim=1)
    loss = InfoNCELoss(0.1).double()
    scores = (im @ s.t()) * 10.0
    want = 0.0
    for i in range(5):
        want -= scores[i, i] - math.log(sum(math.exp(scores[i, j]) for j in range(5)))
        want -= scores[i, i] - math.log(sum(math.exp(scores[j, i]) for j in range(5)))
    torch.testing.assert_close(loss(im, s), torch.as_tensor(want / 2, dtype=torch.float64))
