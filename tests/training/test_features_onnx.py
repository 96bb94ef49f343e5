"""The feature cache runs the backbone on ONNX Runtime (issue 13) with the values torch gives,
and falls back to torch when the fast path cannot be used."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from training import features

pytestmark = pytest.mark.slow  # each backbone export takes seconds


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        p = tmp_path / f"p{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (90, 120, 3), np.uint8)).save(p)
        paths.append(p)
    return paths


def _cached(out, view):
    grid, stages = features.load_cached(out, view)
    return np.asarray(grid, np.float32), np.asarray(stages, np.float32)


def test_onnx_features_match_torch(photos, tmp_path):
    # batch 2: the first batch is checked (and stored from torch), the rest come from ONNX
    got = features.extract("mobilenet_v2", photos, tmp_path / "onnx", ["orig", "flip"], batch_size=2, size=64)
    ref = features.extract("mobilenet_v2", photos, tmp_path / "torch", ["orig", "flip"], batch_size=2,
                           size=64, runtime="torch")
    assert got["runtime"] == "onnx" and ref["runtime"] == "torch"
    assert got["check"]["max_rel_diff_vs_torch"] <= features.ONNX_MAX_REL_DIFF
    for view in ("orig", "flip"):
        (g1, s1), (g2, s2) = _cached(tmp_path / "onnx", view), _cached(tmp_path / "torch", view)
        # stored as fp16: the two runtimes agree to its step
        np.testing.assert_allclose(g1, g2, rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(s1, s2, rtol=2e-3, atol=2e-3)
        assert json.loads((tmp_path / "onnx" / f"done_{view}").read_text())["runtime"] == "onnx"
    # the tuned-blocks inputs (EfficientNet-Lite backbones have forward_until)
    tail = features.extract_tail_inputs("efficientnet-lite0", photos, tmp_path / "onnx", 2, ["orig"],
                                        batch_size=2, size=64)
    ref_tail = features.extract_tail_inputs("efficientnet-lite0", photos, tmp_path / "torch", 2, ["orig"],
                                            batch_size=2, size=64, runtime="torch")
    assert tail["runtime"] == "onnx"
    np.testing.assert_allclose(np.asarray(features.load_tail_inputs(tmp_path / "onnx", "orig", 2), np.float32),
                               np.asarray(features.load_tail_inputs(tmp_path / "torch", "orig", 2), np.float32),
                               rtol=2e-3, atol=2e-3)
    assert ref_tail["runtime"] == "torch"


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_several_tail_depths_from_one_pass(photos, tmp_path, runtime):
    """--tuned-blocks 1 and 2 read the same files whether their inputs were cached in one pass
    over the images or one pass per depth; a depth already cached is not recomputed."""
    both = features.extract_tail_inputs("efficientnet-lite0", photos, tmp_path / "both", [2, 1],
                                        ["orig", "flip"], batch_size=2, size=64, runtime=runtime)
    assert both["runtime"] == runtime
    for k in (1, 2):
        one = tmp_path / f"only{k}"
        features.extract_tail_inputs("efficientnet-lite0", photos, one, k, ["orig", "flip"],
                                     batch_size=2, size=64, runtime=runtime)
        for view in ("orig", "flip"):
            a = np.asarray(features.load_tail_inputs(tmp_path / "both", view, k), np.float32)
            b = np.asarray(features.load_tail_inputs(one, view, k), np.float32)
            assert a.shape == b.shape and a.shape[0] == len(photos)
            if runtime == "torch":
                np.testing.assert_array_equal(a, b)
            else:  # two exported graphs: equal to the fp16 storage step
                np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3)
    stamp = (tmp_path / "both" / "pre1_orig.npy").stat().st_mtime_ns
    again = features.extract_tail_inputs("efficientnet-lite0", photos, tmp_path / "both", [1, 2], ["orig"],
                                         batch_size=2, size=64, runtime=runtime)
    assert again == {"runtime": "torch", "check": {}}
    assert (tmp_path / "both" / "pre1_orig.npy").stat().st_mtime_ns == stamp
    # the two depths differ (the second is one block further into the network)
    assert not np.array_equal(np.asarray(features.load_tail_inputs(tmp_path / "both", "orig", 1)),
                              np.asarray(features.load_tail_inputs(tmp_path / "both", "orig", 2)))


@pytest.mark.parametrize("failure", ["export", "disagrees"])
def test_features_fall_back_to_torch(photos, tmp_path, monkeypatch, caplog, failure):
    real = features._onnx_runner

    def broken(module, size, threads, work):
        if failure == "export":
            raise RuntimeError("exporter exploded")
        run = real(module, size, threads, work)
        return lambda x: tuple(o + 1.0 for o in run(x))  # off by one everywhere

    monkeypatch.setattr(features, "_onnx_runner", broken)
    got = features.extract("mobilenet_v2", photos, tmp_path / "a", ["orig"], batch_size=2, size=64)
    ref = features.extract("mobilenet_v2", photos, tmp_path / "b", ["orig"], batch_size=2, size=64,
                           runtime="torch")
    assert got["runtime"] == "torch" and "backbone features on torch" in caplog.text
    np.testing.assert_array_equal(_cached(tmp_path / "a", "orig")[0], _cached(tmp_path / "b", "orig")[0])
    assert ref["check"] == {}


def test_unknown_runtime_is_refused(photos, tmp_path):
    with pytest.raises(ValueError, match="runtime"):
        features.extract("mobilenet_v2", photos, tmp_path / "x", ["orig"], size=64, runtime="tpu")
