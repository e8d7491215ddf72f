"""Retention (DESIGN §7): policies per clinic and category, and the batched removal of what aged out."""
