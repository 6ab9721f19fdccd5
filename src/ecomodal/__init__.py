"""ecomodal: one embedding space for photos, names, places, satellite views, climate and sounds."""

__version__ = "0.1.0"
