"""The arrangement engine: the audio pool, effects, and the render plan compiled from a
snapshot of the model and rendered block by block (offline and live, the same code)."""
