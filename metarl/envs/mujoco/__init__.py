"""MuJoCo locomotion task distributions of the meta-RL literature as batched families (optional
extra ``mujoco``: ``pip install -e ".[mujoco]"``): HalfCheetahVel-v0, HalfCheetahDir-v0, AntDir-v0,
AntGoal-v0, HopperRandParams-v0, Walker2dRandParams-v0. Make them with ``metarl.make_vec(id, N)``;
importing this package does not import MuJoCo, making an env does."""
