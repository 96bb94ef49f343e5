import json

import pytest

from tests.conftest import shared_data


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """64 real images + captions from f30k8k_train, as a captions.jsonl folder."""
    src = shared_data("f30k8k_train")
    root = tmp_path_factory.mktemp("tiny")
    (root / "images").mkdir()
    lines = (src / "captions.jsonl").read_text().splitlines()[:64]
    for line in lines:
        name = json.loads(line)["image"]
        (root / "images" / name).symlink_to(src / "images" / name)
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests share 2 cores with other jobs: one intra-op thread avoids OpenMP oversubscription."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
