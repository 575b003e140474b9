"""The listening room: ``vae-app`` (or ``streamlit run sweeps/app/page.py``).

Pick a model (an exported bundle folder or a registered MLflow model), upload audio (or use the
built-in synthetic clip), and compare original and reconstruction by ear, waveform and spectrogram,
with the validation metrics. Latent controls scale or offset chosen channels, interpolate between
two clips and sample from the prior. **A/B across sweep trials** reads a sweep through
sweeps/layout.py, builds bundles from two trials' checkpoints on demand (cached), and plays the
same clip through both, metrics side by side.

Environment variables: ``vae-app --help`` (sweeps/app/cli.py).

Plain logic (models, clips, plots, trials) imports no Streamlit and is testable on its own; the
page (page.py, session.py, sidebar.py, tab_*.py) is the only Streamlit code in the project."""
