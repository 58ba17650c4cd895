"""SVD analysis and editing of the matrices the architecture map exposes."""
