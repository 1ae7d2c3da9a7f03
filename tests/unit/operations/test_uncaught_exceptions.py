"""An exception nobody caught ends in the log like any other line, redacted: Python's own hooks
print it to stderr as it is (the text of a bug's KeyError or ValueError may quote a record)."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

from consumer.operations import logs


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `logs.configure` changes, put back after the test. It is called in the test itself:
    pytest puts its own threading.excepthook in place for each phase of a test."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    # Python's own printers, as in the consumer's process (pytest's own thread hook is put back after).
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as raised:
        return raised


@pytest.mark.usefixtures("restored")
def test_an_uncaught_exception_of_the_main_thread_is_logged_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """Found in review: an exception out of `run`'s poll loop (a bug: `KeyError('+905321234567')`)
    was printed by Python's sys.excepthook, past the log formatter: the phone in clear on stderr,
    which Kubernetes collects with the logs."""
    logs.configure("json", "INFO")
    exc = _raised(KeyError("+905321234567 from https://crm:crm-pw-3@crm.internal"))
    sys.excepthook(type(exc), exc, exc.__traceback__)
    said = capsys.readouterr().err
    assert "5321234567" not in said and "crm-pw-3" not in said, said
    assert "+90********67" in said and '"level": "CRITICAL"' in said and "KeyError" in said


@pytest.mark.usefixtures("restored")
def test_an_uncaught_exception_of_another_thread_is_logged_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """Found in review: a short-lived thread's exception (a name lookup's, a token refresh's) went
    to threading.excepthook, which prints it as it is."""
    logs.configure("json", "INFO")
    def fail() -> None:
        raise ValueError("invalid phone 0532 123 45 67")

    thread = threading.Thread(target=fail, name="resolve")
    thread.start()
    thread.join()
    said = capsys.readouterr().err
    assert "123 45 67" not in said and "0********67" in said, said
    assert "resolve" in said and "ValueError" in said


@pytest.mark.usefixtures("restored")
def test_a_hook_someone_else_installed_is_still_called(capsys: pytest.CaptureFixture[str]) -> None:
    """Only Python's own printers are replaced: an error tracker's hook (or pytest's) keeps working."""
    seen: list[str] = []
    threading.excepthook = lambda args: seen.append(args.exc_type.__name__)
    logs.configure("json", "INFO")
    logs.configure("json", "INFO")  # again: called once, not twice

    def fail() -> None:
        raise ValueError("invalid phone 0532 123 45 67")

    thread = threading.Thread(target=fail, name="resolve")
    thread.start()
    thread.join()
    assert seen == ["ValueError"]
    assert "0********67" in capsys.readouterr().err
