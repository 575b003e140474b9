from vae.model.autoencoder import AudioVAE, VAEOutput
from vae.model.bottleneck import GaussianBottleneck, Posterior, free_bits_kl, kl_to_kbps

__all__ = ["AudioVAE", "VAEOutput", "GaussianBottleneck", "Posterior", "free_bits_kl", "kl_to_kbps"]
