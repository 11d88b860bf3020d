"""The network: the activation registry, the U-Net built from a config, its losses and optimisers."""
