"""Training: the runtime every run shares (device, precision, seeds and RNG state, the learning-rate schedule),
cross-supervised pre-training of REFERS, fine-tuning of a pre-trained encoder on a labelled target domain, and
what keeps a run safe to kill and resume: checkpoints, run-folder locks, several processes (DDP), and the checks
that pre-training learned something. Nothing is re-exported here: import from the module that defines a name."""
