"""Readers and writers: ``.expt`` JSON, ``.refl`` msgpack, images, atomic files."""
