"""Thin Lambda handlers, one per stage: Powertools wiring around one ``icegate.pipeline`` call."""
