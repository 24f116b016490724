"""Element-wise work split across threads: the same numbers, bit for bit, and OpenBLAS's idle threads at rest."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

import digitnet.threads as threads
from digitnet import nn
from digitnet.data import augment
from digitnet.data.augment import Compose, ElasticDistortion, RandomAffine, RandomFlip, RandomShift


@pytest.fixture
def four_cores(monkeypatch):
    """Cut work in up to four parts whatever this machine has (the parts then share its cores)."""
    monkeypatch.setattr(threads, "cores", lambda: 4)


def test_parts_cover_the_range_once_and_respect_the_smallest(four_cores):
    for n in (0, 1, 63, 64, 127, 128, 255, 256, 1000, 535_818):
        cut = threads.parts(n, 64)
        assert cut[0][0] == 0 and cut[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(cut, cut[1:], strict=False))
        assert len(cut) == max(1, min(4, n // 64))
        assert len(cut) == 1 or min(hi - lo for lo, hi in cut) >= 64


def test_in_parts_runs_them_at_once_and_raises_a_threads_error(four_cores):
    seen, barrier = [], threading.Barrier(4, timeout=10)

    def work(i, lo, hi):
        barrier.wait()  # returns only when all four parts are running at the same time
        seen.append((i, lo, hi, threading.get_ident()))

    threads.in_parts(work, 400, 100)
    assert sorted(s[:3] for s in seen) == [(0, 0, 100), (1, 100, 200), (2, 200, 300), (3, 300, 400)]
    assert len({s[3] for s in seen}) == 4
    assert [s[3] for s in seen if s[0] == 0] == [threading.get_ident()]  # the caller takes the first part

    def fails(i, lo, hi):
        if i == 2:
            raise ValueError(f"part {i} failed")

    with pytest.raises(ValueError, match="part 2 failed"):
        threads.in_parts(fails, 400, 100)


def test_every_part_follows_the_callers_floating_point_error_settings(four_cores):
    """np.errstate belongs to the thread that sets it: the pool's threads must take the caller's."""
    big = np.full(400, 3e38, np.float32)

    def overflow(i, lo, hi):
        big[lo:hi] * np.float32(10)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning anywhere would be raised from its part
        with np.errstate(over="ignore"):
            threads.in_parts(overflow, 400, 100)
    raised = []

    def counted(i, lo, hi):
        try:
            overflow(i, lo, hi)
        except FloatingPointError:
            raised.append(i)

    with np.errstate(over="raise"):
        threads.in_parts(counted, 400, 100)
    assert sorted(raised) == [0, 1, 2, 3]


@pytest.mark.parametrize("make", [nn.Adam, nn.AdamW, nn.RMSProp, lambda p, lr: nn.SGD(p, lr, momentum=0.9)])
def test_an_optimiser_step_in_parts_is_the_whole_step_bit_for_bit(monkeypatch, four_cores, mnist, make):
    x = mnist.x_train[:512].reshape(512, -1).astype(np.float32) / 255
    y = mnist.y_train[:512].astype(np.int64)
    results = []
    for part in (1 << 40, 1 << 14):  # one piece; four parts of the 535,818 weights
        monkeypatch.setattr(nn.Optimizer, "PART", part)
        model = nn.mlp([784, 512, 256, 10], rng=0)
        opt, loss = make(model.parameters(), lr=1e-3), nn.SoftmaxCrossEntropy()
        for start in range(0, 512, 128):
            opt.zero_grad()
            loss.forward(model.forward(x[start : start + 128]), y[start : start + 128])
            model.backward(loss.backward(), input_grad=False)
            opt.step()
        results.append([opt.data.copy(), *(b.copy() for b in opt.state_buffers())])
    assert len(threads.parts(535_818, 1 << 14)) == 4
    for whole, parts in zip(*results, strict=True):
        assert np.array_equal(whole, parts)
    assert not np.array_equal(results[0][0], nn.mlp([784, 512, 256, 10], rng=0).parameters()[0].data)


def test_a_batch_sampled_in_parts_and_chunks_is_the_batch_sampled_whole(monkeypatch, four_cores, mnist):
    x = mnist.x_train[:300].reshape(300, -1).astype(np.float32) / 255
    warp = lambda: Compose(  # noqa: E731
        RandomShift(1),
        RandomFlip(),
        RandomAffine(12, 0.12, 8),
        RandomAffine(5, 0, 0, 2),
        ElasticDistortion(30, 5),
    )
    monkeypatch.setattr(augment, "PART_ROWS", 1 << 20)
    monkeypatch.setattr(augment, "CHUNK_ROWS", 1 << 20)
    whole = warp()(x, np.random.default_rng(5))
    monkeypatch.setattr(augment, "PART_ROWS", 32)
    monkeypatch.setattr(augment, "CHUNK_ROWS", 7)  # parts of 75 images: ten chunks of 7 and one of 5
    assert len(threads.parts(300, 32)) == 4
    cut = warp()
    assert np.array_equal(whole, cut(x, np.random.default_rng(5)))
    assert not np.array_equal(whole, x)
    # the same transform on a smaller batch reuses its buffers, short chunks and all
    assert np.array_equal(cut(x[:50], np.random.default_rng(6)), warp()(x[:50], np.random.default_rng(6)))


def test_importing_digitnet_first_puts_openblas_idle_threads_to_rest():
    """OpenBLAS reads the setting as NumPy loads: ask the loaded library what it read."""
    code = (
        "import ctypes, glob, os, digitnet, numpy\n"
        "libs = glob.glob(os.path.join(os.path.dirname(numpy.__file__), os.pardir, 'numpy.libs', '*openblas*'))\n"
        "print(ctypes.CDLL(libs[0]).openblas_thread_timeout() if libs else 'none')\n"
    )
    numpy_dir = os.path.dirname(np.__file__)
    if not glob.glob(os.path.join(numpy_dir, os.pardir, "numpy.libs", "*openblas*")):
        pytest.skip("this NumPy does not carry its own OpenBLAS")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert got.stdout.strip() == threads.BLAS_THREAD_TIMEOUT
    # a value the user set is theirs
    env["OPENBLAS_THREAD_TIMEOUT"] = "20"
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert got.stdout.strip() == "20"


def test_a_threads_share_of_the_machine_caps_its_parts_and_no_other_threads():
    previous = threads.share(1)
    try:
        assert threads.cores() == 1
        elsewhere = []
        other = threading.Thread(target=lambda: elsewhere.append(threads.cores()))
        other.start()
        other.join()
        assert elsewhere == [min(threads.MAX_THREADS, len(os.sched_getaffinity(0)))]
        assert threads.parts(1_000_000, 1) == [(0, 1_000_000)]
        ran = []
        threads.in_parts(lambda i, lo, hi: ran.append((i, lo, hi, threading.get_ident())), 1_000_000, 1)
        assert ran == [(0, 0, 1_000_000, threading.get_ident())]
    finally:
        assert threads.share(previous) == 1
    assert threads.cores() == min(threads.MAX_THREADS, len(os.sched_getaffinity(0)))


FORKED = """
import multiprocessing as mp
import numpy as np
import digitnet.threads as threads
from digitnet import nn

threads.cores = lambda: 4  # four slices of the optimiser step, whatever this machine has


def steps():
    model = nn.mlp([784, 512, 256, 10], rng=0)
    opt, loss = nn.Adam(model.parameters(), lr=1e-3), nn.SoftmaxCrossEntropy()
    rng = np.random.default_rng(1)
    x, y = rng.random((128, 784), dtype=np.float32), rng.integers(0, 10, 128)
    for _ in range(2):
        opt.zero_grad()
        loss.forward(model.forward(x), y)
        model.backward(loss.backward(), input_grad=False)
        opt.step()
    return opt.data


def child(conn):
    conn.send_bytes(steps().tobytes())


here = steps()  # this process's pool and its threads exist from here on
fork = mp.get_context("fork")
mine, theirs = fork.Pipe()
p = fork.Process(target=child, args=(theirs,))
p.start()
if not mine.poll(60):
    print("no answer")
else:
    print("the same step" if mine.recv_bytes() == here.tobytes() else "another step")
p.kill()
"""


def test_a_forked_child_splits_its_work_in_threads_of_its_own():
    # the child inherits the parent's pool but none of its threads: handed to it, its slices would wait forever
    got = subprocess.run([sys.executable, "-c", FORKED], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "the same step"
