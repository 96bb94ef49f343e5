"""Building the command line imports no torch (issue 11 #9, peak RSS): torch is for training
and the torch runtime; every library command served by ONNX Runtime must not pay its import
(seconds, and hundreds of MB of resident memory while indexing)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import sys
import cli
parser = cli.build_parser()
for argv in (["search", "a dog"], ["status"], ["folders"], ["repair"], ["index", "x"]):
    parser.parse_args(argv)
heavy = sorted(m for m in ("torch", "torchvision", "transformers", "training") if m in sys.modules)
print(",".join(heavy) or "none")
args = parser.parse_args(["train", "--data", "d", "--out", "o", "--backbone", "vgg19"])
print(args.backbone, "torch" in sys.modules)
"""


def test_build_parser_imports_no_torch():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first == "none"
    # A training command's choices still come from the model code (imported then).
    assert second == "vgg19 True"
