"""GAN discriminators for the VAE's decoder output: one file per family, and ``registry.py``,
the one list of names. Import from the submodules (this file stays empty so that
``vae/config.py`` can read the registry without importing anything that imports the config)."""
