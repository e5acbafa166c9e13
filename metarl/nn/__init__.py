"""Neural-network modules on metarl's kernels: drop-in ``torch.nn.LSTM`` / ``LSTMCell``
with a ``reset`` mask, and the fused recurrent actor-critic step."""
from metarl.nn.actor_critic import RecurrentActorCritic
from metarl.nn.lstm import LSTM, LSTMCell

__all__ = ["LSTM", "LSTMCell", "RecurrentActorCritic"]
