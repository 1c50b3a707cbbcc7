"""Driver-side file access through the Spark session's Hadoop FileSystem.

Listing raw files, writing reports and clearing leftovers go through Hadoop, so every URI and
credential the cluster's Spark can use (hdfs://, s3a://, abfss://, gs://, file://, or a local
path) works the same here. Nothing in this module runs inside a task.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession

from clm_spark import compat


@dataclass(frozen=True)
class FileInfo:
    rel: str  # path below the listed root, '/'-separated
    size: int
    mtime_ms: int
    is_dir: bool = False


class Storage:
    """Files under any Hadoop URI, reached through one Spark session."""

    def __init__(self, spark: SparkSession):
        self.spark = spark

    def _fs(self, uri: str):
        return compat.hadoop_file_system(self.spark, uri)

    def qualify(self, uri: str) -> str:
        """`uri` as Hadoop spells it in full (a local path becomes file:/path)."""
        return self._fs(uri)[1].toString()

    def exists(self, uri: str) -> bool:
        fs, path = self._fs(uri)
        return bool(fs.exists(path))

    def list_files(self, root: str) -> list[FileInfo]:
        """Every file below `root`, recursively, sorted by path; [] when `root` does not exist."""
        fs, base = self._fs(root)
        if not fs.exists(base):
            return []
        prefix = base.toString().rstrip("/") + "/"
        found = [
            FileInfo(s.getPath().toString().removeprefix(prefix), s.getLen(), s.getModificationTime())
            for s in self._statuses(fs, base, walk=fs.getScheme() == "file")
        ]
        return sorted(found, key=lambda f: f.rel)

    @staticmethod
    def _statuses(fs, base, walk: bool):
        """The file statuses below `base`, recursively: with `walk` folder by folder.

        Object stores and HDFS list a whole tree in a few requests (`listFiles`). Hadoop's local
        file system without its native library, though, fills each status `listFiles` returns with
        the file's permissions by forking a shell command per file; its plain directory listing
        reads them only when asked, so a local tree is walked.
        """
        if not walk:
            it = fs.listFiles(base, True)
            while it.hasNext():
                yield it.next()
            return
        folders = [base]
        while folders:
            for status in fs.listStatus(folders.pop()):
                if status.isDirectory():
                    folders.append(status.getPath())
                else:
                    yield status

    def list_dir(self, uri: str) -> list[FileInfo]:
        """The direct children of a folder (files and folders); [] when it does not exist."""
        fs, base = self._fs(uri)
        if not fs.exists(base):
            return []
        prefix = base.toString().rstrip("/") + "/"
        return [
            FileInfo(
                s.getPath().toString().removeprefix(prefix),
                s.getLen(),
                s.getModificationTime(),
                s.isDirectory(),
            )
            for s in fs.listStatus(base)
        ]

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Create or replace the file at `uri` (parent folders are created)."""
        fs, path = self._fs(uri)
        out = fs.create(path, True)
        try:
            out.write(bytearray(data))
        finally:
            out.close()

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))

    def read_bytes(self, uri: str) -> bytes:
        fs, path = self._fs(uri)
        return compat.read_all_bytes(self.spark, fs.open(path))

    def delete(self, uri: str, recursive: bool = False) -> bool:
        fs, path = self._fs(uri)
        return bool(fs.delete(path, recursive))
