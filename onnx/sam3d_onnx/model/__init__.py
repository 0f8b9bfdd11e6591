"""The 3DSAM-adapter itself: configuration (`config`), network (`network`), the released checkpoints'
dataset presets (`presets`) and strict checkpoint import (`checkpoint`)."""
