"""Statistical inference on estimated maps: pure maths, no file I/O."""
from bids_app.inference.conversions import f_to_p, f_to_z, t_to_p, t_to_z

__all__ = ["f_to_p", "f_to_z", "t_to_p", "t_to_z"]
