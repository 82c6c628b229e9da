"""Training: assembling a run from a recipe (``setup``), the engine (step, epoch, evaluation), the epoch loop,
run state and checkpoints, optimiser and schedule, sampler, torch.distributed, the run log, fault injection."""
