#!/bin/sh
# Cache EfficientNet-Lite2 features for the default model (see training/features.py).
set -e
D=${DATA:-../shared/data}
C=${CACHE:-cache/effl2}
PY=${PY:-.venv/bin/python}
$PY -m training.features --data $D/f30k8k_val --out $C/f30k8k_val --views orig
$PY -m training.features --data $D/f8k_extra --out $C/f8k_extra --views orig
$PY -m training.features --data $D/f30k8k_train --out $C/f30k8k_train --views orig,flip
