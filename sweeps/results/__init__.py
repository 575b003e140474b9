"""A sweep's results as its files describe them: the trial records, the report and its plots,
the Pareto front, reference codecs beside the trials, promotion figures and export."""
