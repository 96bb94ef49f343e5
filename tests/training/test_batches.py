"""Training inputs: every cached form of a batch embeds exactly as the inference path does,
and TrainingStep's loss is the criterion's loss on those embeddings."""

import pytest
import torch

from engine.vse.model import VSEConfig, VSEModel
from training.batches import (
    Batch,
    CachedImageFeatures,
    CachedTailInputs,
    CachedTokenStates,
    CaptionTexts,
    PixelImages,
    PooledTextFeatures,
    TrainingStep,
)
from training.features import early_stage_channels
from training.loss import InfoNCELoss
from training.text_cache import build_hidden_caches, pooled_features

CAPTIONS = ["a dog runs on the grass", "two men", "a red car parked near an old building"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = VSEConfig(backbone="efficientnet-lite0", fusion=True, img_head="mlp", tuned_blocks=2,
                    text_pool_layers=3, embed_dim=16)
    return VSEModel(cfg).eval()


def test_cached_backbone_features_embed_like_pixels(model):
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        grid, stages = model.img.backbone(x)
        pooled = torch.cat([s.mean(dim=(2, 3)) for s in stages], dim=1)
        torch.testing.assert_close(CachedImageFeatures(grid, pooled).embed(model), model.embed_images(x))
        torch.testing.assert_close(PixelImages(x).embed(model), model.embed_images(x))


def test_cached_tail_inputs_embed_like_the_whole_network(model):
    x = torch.randn(2, 3, 96, 96)
    n = model.config.tuned_blocks
    with torch.no_grad():
        pre, early = model.img.backbone.forward_until(x, n)
        early_pooled = torch.cat([s.mean(dim=(2, 3)) for s in early], dim=1)
        assert early_pooled.shape[1] == early_stage_channels(model.img.backbone, n)
        torch.testing.assert_close(CachedTailInputs(pre, early_pooled).embed(model), model.embed_images(x))


def test_cached_text_states_embed_like_captions(model):
    caches = build_hidden_caches(model.txt, CAPTIONS, [4, 5, 6], [None, None, None])
    with torch.no_grad():
        full = model.embed_texts(CAPTIONS)
        pooled = PooledTextFeatures(torch.from_numpy(pooled_features(caches))).embed(model)
        h, m = caches[0].batch([0, 1, 2])
        hidden = CachedTokenStates(h, m, 4).embed(model)
        strings = CaptionTexts(CAPTIONS).embed(model)
    # the caches are fp16, hence the tolerance
    torch.testing.assert_close(pooled, full, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(hidden, full, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(strings, full)


def test_training_step_is_the_loss_of_both_embeddings(model):
    x = torch.randn(3, 3, 64, 64)
    criterion = InfoNCELoss()
    step = TrainingStep(model, criterion)
    batch = Batch(PixelImages(x), CaptionTexts(CAPTIONS))
    with torch.no_grad():
        want = criterion(model.embed_images(x), model.embed_texts(CAPTIONS))
        torch.testing.assert_close(step(batch.to(torch.device("cpu"))), want)
