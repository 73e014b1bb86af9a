"""idtfv: improved dense trajectories, Fisher vectors and linear SVMs for action recognition."""

__version__ = "0.1.0"
