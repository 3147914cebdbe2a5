"""Point-latent occupancy networks after POCO (Boulch & Marlet 2022): a feature per input point."""
