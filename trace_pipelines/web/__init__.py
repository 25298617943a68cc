"""Trace's HTTP face: the Stripe webhook receiver (and, later, the Stripe Connect routes)."""
