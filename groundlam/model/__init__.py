from groundlam.model.configuration import GroundLAMConfig
from groundlam.model.modeling import GroundLAM, GroundLAMOutput, LatentActions

__all__ = ["GroundLAM", "GroundLAMConfig", "GroundLAMOutput", "LatentActions"]
