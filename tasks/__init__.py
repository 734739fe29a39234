"""metagrad.tasks: task samplers as pure functions of a PRNG key, and datasets."""

from . import evograd_toy
from ._episodes import Episode, check_episode_args, sample_episode, sample_episodes
from ._linear_classification import (LinearTask, TaskPools, make_task_pools,
                                    sample_from_pool, sample_linear_task, shared_points)
from ._omniglot import (DatasetNotFoundError, load_omniglot, omniglot_splits,
                       with_rotations)
from ._rotation import RotationTask, rotate, rotation_task
from ._sine import SineTask, sample_sine_task, sample_sine_tasks, sine

__all__ = [
    "DatasetNotFoundError", "Episode", "LinearTask", "RotationTask", "SineTask", "TaskPools",
    "check_episode_args", "evograd_toy", "load_omniglot", "make_task_pools", "omniglot_splits",
    "rotate", "rotation_task", "sample_episode", "sample_episodes", "sample_from_pool",
    "sample_linear_task", "sample_sine_task", "shared_points", "sample_sine_tasks", "sine", "with_rotations",
]
