"""Images in: decoding within bounds, folders and splits, uploaded archives, transforms."""
