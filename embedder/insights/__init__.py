"""What a trained space says about its data: mislabels, duplicates, triplets explained, exports."""
