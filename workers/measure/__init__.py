"""Measuring one trial: the timing loop, statistics, validity, parity, stale outputs, energy,
memory, the sampler, CPU affinity and the environment.
"""
