"""Expected recovery (DESIGN §8): the clinic's reference trajectories and the not-on-track signal. Pure."""
