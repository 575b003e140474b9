"""Thin command-line front-ends of the library (installed as ``vae-train``, ``vae-encode``,
``vae-decode``, ``vae-evaluate``, ``vae-export``, ``vae-benchmark``): they parse arguments and call
library functions. Shared flags and the error convention live in ``common``."""
