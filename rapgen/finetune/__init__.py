"""Fine-tuning: the loop, its settings, the compiled step, optimizers, the run folder, memory, the Drive mirror."""
