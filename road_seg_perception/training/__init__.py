"""Training stack: model builder, losses, dataset readers, augmentation, the training loop and export."""
