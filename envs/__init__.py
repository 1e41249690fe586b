"""Gymnasium environments of policysearch (registered by ``import policysearch``)."""
