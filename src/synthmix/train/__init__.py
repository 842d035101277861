"""Training a classifier on a mix."""
