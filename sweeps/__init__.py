"""The sweep platform: search-space YAML → Ray Tune + Optuna + ASHA + MLflow. Imports ``vae``;
``vae`` never imports this package."""
