"""The report corpus: study records from IU X-ray and MIMIC-CXR, report cleaning, structured labels, left/right
swaps, the report tokenizer, patient-wise splits and the report side of a pre-training dataset."""
