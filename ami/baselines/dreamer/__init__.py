"""A Dreamer-style baseline (DreamerV3's recipe for vector observations) on ami's agent contract.

`rssm` (the recurrent state-space model), `objectives` (KL balancing, return normalisation,
the actor's distribution, lambda-returns in imagination) and `agent` (`make_dreamer`, the
family `dreamer`: `agent.name: dreamer` in a config, settings in `dreamer.*`).
"""
