"""The VSE network used at inference: backbones, pooling, text encoders, checkpoints, embedder."""
