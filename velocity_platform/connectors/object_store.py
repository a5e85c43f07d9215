"""The lake on an S3-compatible object store: where it is, how delta-rs, DuckDB and a listing reach it.

`VELOCITY_LAKE_PATH=s3://BUCKET/PREFIX` puts the warehouse tables in a bucket (AWS S3, MinIO,
Ceph, R2, ...). The endpoint and credentials come from the environment under the names every
S3 tool reads, never from a setting, a log line or metadata:

- `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN` for temporary ones);
- `AWS_REGION` (default us-east-1);
- `AWS_ENDPOINT_URL` for a store other than AWS (`http://minio:9000`); path-style addressing
  then, and plain HTTP when the URL says so.

Commits are made by conditional put (`If-None-Match: *` on the next log entry, which AWS S3 and
MinIO honour): two writers racing for one version cannot both win, so no lock table and never
delta-rs's unsafe rename.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

REMOTE_SCHEMES = ("s3",)
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# The environment an s3:// lake reads (variable -> default, meaning), for the README's table.
VARIABLES = {
    "AWS_ACCESS_KEY_ID": ("none", "the lake bucket's access key id when VELOCITY_LAKE_PATH is s3://...; read from the environment by the lake's connections, never held by Settings"),
    "AWS_SECRET_ACCESS_KEY": ("none", "its secret key; a secret, never logged (DuckDB gets it as a secret scoped to the bucket)"),
    "AWS_SESSION_TOKEN": ("none", "the session token of temporary credentials, if any; a secret"),
    "AWS_REGION": ("`us-east-1`", "the bucket's region"),
    "AWS_ENDPOINT_URL": ("none (AWS)", "an S3-compatible store other than AWS (`http://minio:9000`): path-style, plain HTTP when the URL says so"),
}


class ObjectStoreError(ValueError):
    """The lake's object store is not usable as configured: one line naming the variable."""


def is_remote(uri: str) -> bool:
    """Whether the lake is an object store (not a folder, local or mounted)."""
    return "://" in uri and not uri.startswith("file://")


def check_lake_uri(uri: str) -> None:
    """Refuse a scheme this platform does not commit to safely."""
    scheme = uri.split("://", 1)[0].lower()
    if is_remote(uri) and scheme not in REMOTE_SCHEMES:
        raise ObjectStoreError(
            f"VELOCITY_LAKE_PATH={scheme}://...: the lake is a folder (local or a shared mount) or an "
            f"S3-compatible bucket (s3://BUCKET/PREFIX); {scheme}:// is not supported"
        )
    if scheme == "s3" and not urlsplit(uri).netloc:
        raise ObjectStoreError(f"VELOCITY_LAKE_PATH={uri}: name the bucket, s3://BUCKET/PREFIX")


@dataclass(frozen=True)
class S3Lake:
    """An s3:// lake and the environment's way in."""

    uri: str

    @property
    def bucket(self) -> str:
        return urlsplit(self.uri).netloc

    @property
    def prefix(self) -> str:
        return urlsplit(self.uri).path.strip("/")

    @cached_property
    def credentials(self) -> dict[str, str]:
        missing = [v for v in CREDENTIAL_VARIABLES if not os.environ.get(v)]
        if missing:
            raise ObjectStoreError(
                f"VELOCITY_LAKE_PATH={self.uri} needs {' and '.join(missing)} in the environment "
                "(the bucket's access key; AWS_ENDPOINT_URL too for a store other than AWS)"
            )
        found = {v: os.environ[v] for v in CREDENTIAL_VARIABLES}
        if os.environ.get("AWS_SESSION_TOKEN"):
            found["AWS_SESSION_TOKEN"] = os.environ["AWS_SESSION_TOKEN"]
        return found

    @property
    def region(self) -> str:
        return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"

    @property
    def endpoint(self) -> str | None:
        return os.environ.get("AWS_ENDPOINT_URL") or None

    def storage_options(self) -> dict[str, str]:
        """delta-rs's options: the credentials, the endpoint, and commits by conditional put."""
        options = {**self.credentials, "AWS_REGION": self.region, "conditional_put": "etag"}
        if self.endpoint:
            options["AWS_ENDPOINT_URL"] = self.endpoint
            options["AWS_ALLOW_HTTP"] = "true" if self.endpoint.startswith("http://") else "false"
        return options

    def duckdb_secret_sql(self) -> str:
        """The CREATE SECRET that lets DuckDB's delta_scan read the bucket (values quoted, never logged)."""

        def quoted(value: str) -> str:
            return "'" + value.replace("'", "''") + "'"

        fields = {
            "TYPE": "s3",
            "KEY_ID": quoted(self.credentials["AWS_ACCESS_KEY_ID"]),
            "SECRET": quoted(self.credentials["AWS_SECRET_ACCESS_KEY"]),
            "REGION": quoted(self.region),
            "SCOPE": quoted(f"s3://{self.bucket}"),
        }
        if "AWS_SESSION_TOKEN" in self.credentials:
            fields["SESSION_TOKEN"] = quoted(self.credentials["AWS_SESSION_TOKEN"])
        if self.endpoint:
            where = urlsplit(self.endpoint)
            fields |= {"ENDPOINT": quoted(where.netloc), "URL_STYLE": "'path'", "USE_SSL": "false" if where.scheme == "http" else "true"}
        return "CREATE OR REPLACE SECRET velocity_lake (" + ", ".join(f"{k} {v}" for k, v in fields.items()) + ")"

    def filesystem(self):
        """pyarrow's S3 filesystem on the same endpoint and credentials (for listing and removing)."""
        from pyarrow import fs

        where = urlsplit(self.endpoint) if self.endpoint else None
        return fs.S3FileSystem(
            access_key=self.credentials["AWS_ACCESS_KEY_ID"],
            secret_key=self.credentials["AWS_SECRET_ACCESS_KEY"],
            session_token=self.credentials.get("AWS_SESSION_TOKEN"),
            region=self.region,
            endpoint_override=where.netloc if where else None,
            scheme=where.scheme if where else "https",
            force_virtual_addressing=False,
        )

    def _path(self, *parts: str) -> str:
        return "/".join(p for p in (self.bucket, self.prefix, *parts) if p)

    def table_folders(self) -> list[str]:
        """The names of the folders under the lake's prefix that hold a Delta log (one listing of
        the prefix with a delimiter, and one per folder: never a walk of the data files)."""
        from pyarrow import fs

        store = self.filesystem()
        try:
            folders = store.get_file_info(fs.FileSelector(self._path(), recursive=False, allow_not_found=True))
        except OSError as exc:
            raise ObjectStoreError(f"the lake {self.uri} cannot be listed: {exc}") from None
        names = [f.base_name for f in folders if f.type == fs.FileType.Directory]
        logs = store.get_file_info([self._path(name, "_delta_log") for name in names])
        return sorted(name for name, log in zip(names, logs) if log.type == fs.FileType.Directory)

    def remove_tables(self) -> None:
        """Delete every table's folder (its log and its data files), nothing else under the prefix."""
        store = self.filesystem()
        for name in self.table_folders():
            store.delete_dir(self._path(name))
