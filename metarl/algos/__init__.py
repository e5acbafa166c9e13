"""The meta-learners: one module per algorithm (``metarl.algos.rl2``, ...)."""
