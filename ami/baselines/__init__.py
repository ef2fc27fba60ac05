"""Baseline agents run inside ami: same envs, step counting, run directory and logging."""
