"""Datasets: uploads, their file formats, and the splits workers train on."""
