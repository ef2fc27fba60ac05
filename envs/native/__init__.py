"""ami's own pure-JAX tasks: differentiable, compile in seconds, used by most tests."""

from envs.native.maze import Maze
from envs.native.pendulum import Pendulum
from envs.native.point_mass import PointMass
from envs.native.two_rooms import TwoRooms

__all__ = ["Maze", "Pendulum", "PointMass", "TwoRooms"]
