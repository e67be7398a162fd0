"""From built data on disk to batches: the uint8 image cache, the pre-training studies, the target-domain
datasets and their label ratios, view selection, batch collation, on-device augmentation and toy studies."""
