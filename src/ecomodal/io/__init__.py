"""The I/O layer: every file format ecomodal reads or writes lives here."""
