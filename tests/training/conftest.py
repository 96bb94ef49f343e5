import json

import numpy as np
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


COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30),
    "black": (15, 15, 15), "white": (245, 245, 245), "orange": (245, 140, 20), "purple": (130, 40, 170),
}
SHAPES = ("circle", "square")
TEMPLATES = ("a {c} {s}", "a {s} coloured {c}", "one {c} {s} on a grey background")


def write_colour_dataset(root, colours=tuple(COLOURS), shapes=SHAPES, seed=0):
    """A captions.jsonl folder where matching is learnable from frozen features: one 64x64
    image per colour and shape (a filled shape, jittered, on grey), captions naming both."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for c in colours:
        for s in shapes:
            im = Image.new("RGB", (64, 64), (128, 128, 128))
            x0, y0 = (int(v) for v in rng.integers(4, 16, size=2))
            box = (x0, y0, x0 + 44, y0 + 44)
            draw = ImageDraw.Draw(im)
            (draw.ellipse if s == "circle" else draw.rectangle)(box, fill=COLOURS[c])
            arr = np.asarray(im, np.int16) + rng.integers(-8, 9, (64, 64, 3))
            name = f"{c}_{s}.png"
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(root / "images" / name)
            rows.append({"image": name, "captions": [t.format(c=c, s=s) for t in TEMPLATES]})
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="session")
def colour_dataset(tmp_path_factory):
    """16 generated images (8 colours x 2 shapes), 3 captions each; needs no shared data."""
    return write_colour_dataset(tmp_path_factory.mktemp("colours"))
