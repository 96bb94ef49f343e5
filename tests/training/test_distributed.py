"""torchrun: two CPU processes (gloo) with half the batch each take the same steps as one
process with the whole batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.vse.checkpoint import read_checkpoint
from engine.vse.model import VSEConfig, VSEModel

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=900).returncode
    assert rc == 0, log.read_text()[-3000:]


@pytest.mark.slow  # three processes that each load MiniLM: about a minute on 2 cores
def test_two_processes_train_like_one(colour_dataset, tmp_path):
    # deterministic and dropout-free: linear heads, no feature/token dropout; InfoNCE so the
    # learned temperature must stay in step across processes too; two cached views so the
    # per-pair view draws must agree as well; no val set, so no rank-0-only choices
    common = ["main.py", "train", "--data", str(colour_dataset), "--backbone", "mobilenet_v2",
              "--image-size", "64", "--embed-dim", "32", "--views", "orig,flip", "--text-cache", "pooled",
              "--loss", "infonce", "--epochs", "3", "--lr", "1e-3", "--workers", "0", "--bank-size", "0",
              "--threads", "1", "--cache-dir", str(tmp_path / "cache")]
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    _run([sys.executable, *common, "--batch-size", "16", "--out", str(one)], tmp_path / "one.log")
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          *common, "--batch-size", "8", "--out", str(two)], tmp_path / "two.log")  # rc 0: both ranks finished

    a, b = read_checkpoint(one), read_checkpoint(two)
    assert a["training"]["step"] == b["training"]["step"] == 9  # 48 pairs / 16 per step, 3 epochs
    assert set(a["state_dict"]) == set(b["state_dict"])
    torch.manual_seed(0)  # both runs start from the seed-0 network
    start = VSEModel(VSEConfig(backbone="mobilenet_v2", image_size=64, grid_positions=4, embed_dim=32)).state_dict()
    moved = sum(float((a["state_dict"][k] - start[k]).norm() ** 2) for k in a["state_dict"]) ** 0.5
    apart = sum(float((a["state_dict"][k] - b["state_dict"][k]).norm() ** 2) for k in a["state_dict"]) ** 0.5
    assert moved > 0.1  # training moved the weights ...
    assert apart < 1e-3 * moved  # ... and both runs moved them the same way
    for k in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], atol=1e-4, rtol=1e-4)
    ra = torch.load(one.with_suffix(".resume.pt"), weights_only=True)
    rb = torch.load(two.with_suffix(".resume.pt"), weights_only=True)
    # the loss each process logs is the whole batch's loss, as one process sees it
    assert [h["loss"] for h in rb["history"]] == pytest.approx([h["loss"] for h in ra["history"]], rel=1e-5)
    torch.testing.assert_close(rb["criterion"]["log_scale"], ra["criterion"]["log_scale"], atol=1e-5, rtol=0)
