"""Training of groundbreak: the U-Net change model, LightningModule, losses, metrics, export."""
