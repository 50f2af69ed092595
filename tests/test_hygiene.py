"""The leak check in conftest.py fails a test that leaves a thread or a child process behind.

Each case runs an inner pytest session (in this process) whose conftest uses the same check,
then stops what the inner test leaked, so this test itself leaves nothing behind.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

import pytest
from support import child_processes

pytest_plugins = ["pytester"]

INNER_CONFTEST = """
import pytest
from support import LeakCheck

@pytest.fixture(autouse=True)
def clean_process():
    check = LeakCheck(grace=0.2)
    yield
    check.verify()
"""


@pytest.fixture
def inner(pytester):
    pytester.makeconftest(INNER_CONFTEST)
    return pytester


def test_a_leaked_thread_fails_the_test_by_name(inner):
    inner.makepyfile(test_leaky="""
        import threading

        def test_leaves_a_thread():     # alive past the inner check's 0.2 s grace, gone soon after
            threading.Thread(target=threading.Event().wait, args=(2,), name="leaked-by-test").start()

        def test_cleans_up():
            t = threading.Thread(target=lambda: None, name="finished-in-time")
            t.start()
        """)
    try:
        result = inner.runpytest("-p", "no:cacheprovider")
    finally:
        for thread in threading.enumerate():
            if thread.name == "leaked-by-test":
                thread.join()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaves_a_thread*",
                                 "*left running after the test: thread 'leaked-by-test'*"])
    assert "finished-in-time" not in result.stdout.str()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="child processes are listed from /proc")
def test_a_leaked_child_process_fails_the_test_by_pid(inner):
    before = set(child_processes())
    inner.makepyfile(test_leaky=f"""
        import subprocess

        def test_leaves_a_process():
            subprocess.Popen([{sys.executable!r}, "-c", "import time; time.sleep(5)"])
        """)
    try:
        result = inner.runpytest("-p", "no:cacheprovider")
    finally:
        leaked = [pid for pid, _ in set(child_processes()) - before]
        for pid in leaked:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert len(leaked) == 1
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([f"*left running after the test: process {leaked[0]} (*time.sleep(5)*"])

