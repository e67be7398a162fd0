"""Radiographs rendered from real chest CTs: the CT and its organs, many patients by deformation, digitally
reconstructed radiographs, the findings drawn into them, and the source and target domains built from them."""
