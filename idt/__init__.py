"""idtfv: improved dense trajectories, Fisher vectors and linear SVMs for action recognition."""

__version__ = "0.1.0"

from idt.params import IDTParams  # noqa: E402
from idt.trajectories import Trajectories, concatenate, load_trajectories  # noqa: E402

# ``idt.extract`` is the function (the module of the same name is ``sys.modules["idt.extract"]``); importing it
# here binds the name to the function after the submodule is loaded.
from idt.extract import extract, iter_trajectories  # noqa: E402

__all__ = ["__version__", "extract", "iter_trajectories", "IDTParams", "Trajectories", "load_trajectories",
           "concatenate"]
