"""Everything the models read, by job: ``reports/`` (the report corpus), ``synthesis/`` (radiographs rendered
from chest CTs), ``real/`` (real datasets on a user's disk), ``loading/`` (built data to batches), and
``assets`` (the pinned offline files)."""
