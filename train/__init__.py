"""Training of groundbreak: the change model, the LightningModule, losses, metrics, export.

- :mod:`.model`, :mod:`.fc_networks`: the change networks (U-Net on smp, FC-Siam);
- :mod:`.task`: the LightningModule (hooks for models, losses, metrics);
- :mod:`.losses`, :mod:`.metrics`: training losses and pooled change metrics;
- :mod:`.cli`: ``groundbreak train`` (LightningCLI);
- :mod:`.export`, :mod:`.bundle`: checkpoint -> model bundle (safetensors + JSON) and back;
  :mod:`.bundle_meta` checks its ``model.json``, :mod:`.bundle_weights` its weights;
- :mod:`.arguments`, :mod:`.devices`: command-line argument types, device choice.

Imports only ``datasets``; evaluation on whole scenes and cross-validation, which also need the
tiled predictor, live in :mod:`groundbreak.infer.evaluation`.
"""

__all__ = [
    "arguments",
    "bundle",
    "bundle_meta",
    "bundle_weights",
    "cli",
    "devices",
    "export",
    "fc_networks",
    "losses",
    "metrics",
    "model",
    "task",
]
