"""Labelling and vetting candidates in the browser, with active learning (``otrain label``)."""
