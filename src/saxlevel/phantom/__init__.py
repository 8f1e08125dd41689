"""Synthetic cardiac cine SAX phantom in the Kaggle DSB2 layout (see generate.make_phantom)."""

from saxlevel.phantom.generate import PhantomParams, make_phantom

__all__ = ["PhantomParams", "make_phantom"]
