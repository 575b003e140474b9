"""Commands built on sweeps: studies (sweep-study, sweep-promote), the music corpus, and the
CPU and GPU benchmarks."""
