"""Evaluation: what a pre-trained or fine-tuned model is worth. Per-class ROC-AUC and the paper's seed statistics,
zero-shot classification, image <-> report retrieval, report generation quality, linear probes of a frozen encoder,
class activation maps (localisation), and the runner that evaluates a pre-training run folder directly. Nothing is
re-exported here: import from the module that defines a name."""
