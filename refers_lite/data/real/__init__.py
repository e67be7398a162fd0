"""Real datasets on a user's disk: one radiograph file (DICOM, PNG, JPEG) to the models' image format, and the
real target datasets to the domain layout."""
