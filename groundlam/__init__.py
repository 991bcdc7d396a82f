"""groundlam: latent action models from video, grounded in the episodes' language labels."""

from groundlam.focus import FocusMaps, focus_map
from groundlam.model import GroundLAM, GroundLAMConfig, GroundLAMOutput, LatentActions

__version__ = "0.1.0"

__all__ = ["FocusMaps", "GroundLAM", "GroundLAMConfig", "GroundLAMOutput", "LatentActions",
           "focus_map", "__version__"]
