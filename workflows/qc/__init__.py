"""Quality control of rejected leads and deals."""
