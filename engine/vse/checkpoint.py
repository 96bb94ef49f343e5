"""One-file checkpoints, readable with torch.load(weights_only=True): no pickled objects.

Contents: format tag, config (plain dict), state dict of the weights training changed,
vocabulary (GRU only, a list of words), package records for weights read from installed
packages (backbone / MiniLM / GloVe: package, version, sha256 — verified on load), model id
(sha256 over config, packages and stored tensors), training data + args, final metrics and
calibration (weak-match threshold).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from engine.errors import ModelLoadError
from engine.vse.backbones import package_record, verify_package_record
from engine.vse.model import VSEConfig, VSEModel
from engine.vse.text_encoders import TRANSFORMER_TEXT_MODELS, glove_record

log = logging.getLogger(__name__)

FORMAT = "photosearch-vse/1"


def package_records(config: VSEConfig) -> dict[str, dict[str, str]]:
    recs: dict[str, dict[str, str]] = {}
    if not config.finetune:
        rec = package_record(config.backbone)
        # torchvision backbones (vgg19/resnet152) come from the torchvision weights API
        recs["backbone"] = rec or {"package": "torchvision", "weights": "DEFAULT"}
    if config.text_encoder in TRANSFORMER_TEXT_MODELS:
        recs["text"] = TRANSFORMER_TEXT_MODELS[config.text_encoder][1]()
    else:
        recs["glove"] = glove_record()
    return recs


def compute_model_id(config: dict, packages: dict, state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True).encode())
    h.update(json.dumps({k: v.get("sha256", v) for k, v in packages.items()}, sort_keys=True).encode())
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return "vse-" + h.hexdigest()[:16]


def save_checkpoint(
    path: Path,
    model: VSEModel,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    half: bool = False,
) -> str:
    """Write atomically; returns the model id. `half` stores float tensors as fp16 (smaller)."""
    full = model.state_dict()
    state = {}
    for k in model.stored_keys():
        t = full[k].detach().cpu().clone()
        if (half or k in model.HALF_KEYS) and t.is_floating_point():
            t = t.half()
        state[k] = t
    config = model.config.to_dict()
    packages = package_records(model.config)
    model_id = compute_model_id(config, packages, state)
    ckpt = {
        "format": FORMAT,
        "model_id": model_id,
        "config": config,
        "state_dict": state,
        "vocab": model.vocab,
        "packages": packages,
        "training": _plain(training or {}),
        "metrics": _plain(metrics or {}),
        "calibration": _plain(calibration or {}),
        "extra": _plain(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a shipped model must be readable by all
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return model_id


def _plain(obj: Any) -> Any:
    """Round-trip through JSON so only plain types reach the checkpoint."""
    return json.loads(json.dumps(obj, default=str))


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"checkpoint {path} does not exist") from exc
    except Exception as exc:  # torch raises several types for corrupt files
        raise ModelLoadError(f"checkpoint {path} is not readable: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelLoadError(f"{path} is not a photosearch model checkpoint")
    return ckpt


def load_checkpoint(path: Path, verify: bool = True) -> tuple[VSEModel, dict[str, Any]]:
    """Rebuild the model: package weights from the packages (hash-checked), the rest from the file."""
    ckpt = read_checkpoint(path)
    config = VSEConfig.from_dict(ckpt["config"])
    state = ckpt["state_dict"]
    if verify:
        mid = compute_model_id(ckpt["config"], ckpt["packages"], state)
        if mid != ckpt["model_id"]:
            raise ModelLoadError(f"{path}: weights do not match the stored model id (corrupt file?)")
        pk = ckpt["packages"]
        if "backbone" in pk and pk["backbone"].get("package") != "torchvision":
            verify_package_record(config.backbone, pk["backbone"])
        text_record = TRANSFORMER_TEXT_MODELS.get(config.text_encoder, (None, glove_record))[1]
        for key, current in (("text", text_record), ("glove", glove_record)):
            if key in pk and current()["sha256"] != pk[key]["sha256"]:
                raise ModelLoadError(
                    f"installed {pk[key]['package']} differs from the version this model was "
                    f"trained with ({pk[key].get('version')})"
                )
    model = VSEModel(config, vocab=ckpt.get("vocab"), backbone_weights=None if not config.finetune else "none")
    model_state = model.state_dict()
    for k, v in state.items():
        if k not in model_state:
            raise ModelLoadError(f"{path}: unexpected weight {k}")
        model_state[k] = v.to(model_state[k].dtype)
    model.load_state_dict(model_state)
    model.eval()
    return model, ckpt
