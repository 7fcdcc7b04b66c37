"""Finding insects in frames and cutting them out."""
