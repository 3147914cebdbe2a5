"""Convolutional Occupancy Networks (Peng et al. 2020): local feature planes or grids."""
