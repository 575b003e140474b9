"""Audio chunks for training: ``registry.py`` lists the sources (one file each), ``datamodule.py``
batches them. Import from the submodules (this file stays empty so that ``vae/config.py`` can read
the registry without importing the data module, which imports the config)."""
