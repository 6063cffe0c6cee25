"""Cleaning shared by the batch and the stream paths: raw records in, silver rows and quarantined rows out."""
