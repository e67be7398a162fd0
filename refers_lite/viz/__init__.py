"""Visualisation: loss curves read from a run's ``metrics.jsonl`` and the interactive CAM explorer (ipywidgets).
Nothing is re-exported here: import from the module that defines a name."""
