"""`make bench` (`run`): the engine against the straightforward PyTorch model and the fp32 floor
(`floor`), on inputs made once (`packages`). The GPU measurements are in bench/gpu/ of the repository."""
