"""SVD analysis and editing of the matrices the architecture map exposes."""

# The SVD paper's clipping rates xi (share of the spectrum removed); rate 0 is the unedited model.
PAPER_RATES = (0.0, 0.1, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995)
