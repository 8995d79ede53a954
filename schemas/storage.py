"""Where a dataset root lives: a local directory, or an S3-compatible bucket given as `s3://bucket/prefix`.

A bucket is reached through s3fs (a well-kept fsspec filesystem over botocore): endpoint, region and
credentials come from the usual AWS environment variables (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) unless given here; they are never logged. s3fs is the optional
extra `booktape[s3]`, imported only for an s3:// root.
"""
from __future__ import annotations

import os


def is_remote(root: str | os.PathLike) -> bool:
    """True for an s3:// root."""
    return str(root).startswith("s3://")


def key(root: str, *parts: str) -> str:
    """`bucket/prefix/part/...` (the s3fs path, no scheme) of a path under an s3:// root."""
    base = str(root)[len("s3://"):].strip("/")
    return "/".join([base, *(p.strip("/") for p in parts if p)])


def filesystem(endpoint_url: str | None = None, region: str | None = None, key: str | None = None,
               secret: str | None = None):
    """An s3fs filesystem that lists afresh every time (new objects appear to readers at once); key and secret
    default to botocore's chain (AWS_* environment, profiles, instance roles)."""
    try:
        import s3fs
    except ImportError:
        raise RuntimeError("an s3:// dataset root needs s3fs: pip install 'booktape[s3]'") from None
    client = {k: v for k, v in (("endpoint_url", endpoint_url), ("region_name", region)) if v}
    return s3fs.S3FileSystem(key=key, secret=secret, client_kwargs=client or None, use_listings_cache=False,
                             skip_instance_cache=True)


def sha256_file(path: str | os.PathLike, fs=None) -> tuple[int, str]:
    """(size, SHA-256 hex) of a local file, or of an object when fs is given, read in 8 MB pieces."""
    import hashlib

    h, n = hashlib.sha256(), 0
    with (open(path, "rb") if fs is None else fs.open(path, "rb", block_size=8 << 20)) as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


class UploadMismatch(RuntimeError):
    """An uploaded object does not match its local file (size or checksum)."""


def put_verified(fs, local: str | os.PathLike, key_: str) -> None:
    """Upload a local file to key (visible only once complete: S3 PUT/multipart semantics), then check the
    object's size and the SHA-256 of its bytes read back against the local file; raise UploadMismatch if not."""
    want = sha256_file(local)
    fs.put_file(str(local), key_)
    if fs.info(key_)["size"] != want[0] or sha256_file(key_, fs) != want:
        raise UploadMismatch(f"uploaded {key_} does not match {local}")
