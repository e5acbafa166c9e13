"""The examples in docstrings and in the README run as written."""
import doctest
import importlib
import re
from pathlib import Path

import pytest

MODULES = [
    "metarl.envs.registry", "metarl.envs.tasks", "metarl.envs.trial", "metarl.envs.numpy_adapter",
    "metarl.envs.single", "metarl.envs.cartpole", "metarl.envs.pendulum", "metarl.envs.bandit",
    "metarl.envs.tabular_mdp", "metarl.envs.navigation", "metarl.envs.mountain_car",
    "metarl.envs.mountain_car_continuous", "metarl.envs.acrobot", "metarl.envs.gym_adapter",
    "metarl.envs.delayed_reward",
    "metarl.nn.lstm", "metarl.nn.actor_critic", "metarl.rollout",
    "metarl.memory.flat", "metarl.memory.batched", "metarl.memory.dnd",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_readme_python_examples():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
