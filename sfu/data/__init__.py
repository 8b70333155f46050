"""Data channels relayed between the participants of a room."""
