"""Occupancy Networks (Mescheder et al. 2019): one global code per shape."""
