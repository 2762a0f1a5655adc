"""The store's content digests (docs/operations.md), to check downloaded files end to end.

A file of at most 16 MiB is "sha256:<hex>", the SHA-256 of its bytes. A larger one is
"sha256-c16m:<hex>": SHA-256 over a domain tag, the size as 8 little-endian bytes and the raw
SHA-256 of each 16 MiB chunk in order."""
import hashlib

CHUNK = 16 << 20
_TAG = b"squeeze.blob.sha256-c16m.v1"


def file_digest(path, like):
    """The digest of the file at `path` by the scheme of the digest text `like`."""
    if like.startswith("sha256:"):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
        return "sha256:" + h.hexdigest()
    if like.startswith("sha256-c16m:"):
        root = hashlib.sha256()
        root.update(_TAG)
        size = 0
        chunks = []
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                size += len(block)
                chunks.append(hashlib.sha256(block).digest())
        root.update(size.to_bytes(8, "little"))
        for c in chunks:
            root.update(c)
        return "sha256-c16m:" + root.hexdigest()
    raise ValueError(f"digest: unknown scheme in {like!r}")
