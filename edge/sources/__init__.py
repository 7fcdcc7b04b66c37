"""Frame sources: cameras, video, image folders and the synthetic scene."""
