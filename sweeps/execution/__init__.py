"""Running a sweep: the driver (Ray Tune, Optuna, ASHA), one trial's function (one worker or a Ray
Train group), the checks before Ray starts, MLflow tracking and what the person watching reads."""
