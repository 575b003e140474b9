"""The one error every data source raises for data it cannot use."""


class DatasetError(ValueError):
    """The dataset cannot be used as configured; the message names the offending path."""
