"""The project model: musical time, the interchange form and the pycrdt document behind a
typed API. Nothing here imports Kivy or renders audio."""
