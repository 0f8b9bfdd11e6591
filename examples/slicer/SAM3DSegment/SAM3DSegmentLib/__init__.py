from .logic import SAM3DSegmentLogic  # noqa: F401
