"""The store every stage writes; the bottom layer, importing nothing but the model."""
