"""The checkpoint protocol of DESIGN §4: authenticated blobs, fenced atomic writes, history."""
