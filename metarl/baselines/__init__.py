"""Classical baselines of RL^2 (Duan et al. 2016) Tables 1 and 2, batched over tasks.

* Bernoulli bandits (Table 1): :func:`evaluate_bandit` with a name from
  :data:`BANDIT_BASELINES` — ``random``, ``greedy``, ``epsilon_greedy``, ``ucb1``,
  ``thompson``, ``gittins`` (discounted index) and ``bayes_optimal`` (exact DP, n <= 20).
* Random tabular MDPs (Table 2): :func:`evaluate_tabular` with a name from
  :data:`TABULAR_BASELINES` — ``random``, ``greedy``, ``epsilon_greedy``, ``psrl``.
* :func:`summary`: mean and standard error over tasks.

Both evaluators step the real metarl envs (``Bandit-v0``, ``TabularMDP-v0``), so rewards,
start states and transitions are the envs' own.
"""
from metarl.baselines._common import summary
from metarl.baselines.bandits import BANDIT_BASELINES, bayes_optimal_table, evaluate_bandit, gittins_table
from metarl.baselines.tabular import TABULAR_BASELINES, evaluate_tabular

__all__ = ["BANDIT_BASELINES", "TABULAR_BASELINES", "evaluate_bandit", "evaluate_tabular", "summary",
           "bayes_optimal_table", "gittins_table"]
