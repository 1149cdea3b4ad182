"""Downstream evaluation of pretrained encoders (XTREME)."""
