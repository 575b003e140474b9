"""A search space: the YAML schema and its checks (schema.py), the params' distributions, the
rules between params, and what a sweep optimises as the space states it."""
