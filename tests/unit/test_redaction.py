"""Secrets never leave the executor: whole, in commands, or printed in pieces across lines."""

from __future__ import annotations

from offload.executor.redaction import Redactor

SECRET = "hunter2-very-secret-value"
TOKEN = "0123456789abcdef0123"


def redactor() -> Redactor:
    return Redactor({SECRET: "${{ secrets.API_KEY }}", TOKEN: "SECRET_REMOVED"})


def test_whole_values_are_replaced_in_output_and_commands() -> None:
    r = redactor()
    out = r.text(f"stdout: key is {SECRET}\nstderr: token={TOKEN}\n")
    assert SECRET not in out and TOKEN not in out
    assert "stdout: key is ${{ secrets.API_KEY }}" in out and "token=SECRET_REMOVED" in out
    assert r.words(["curl", "-H", f"Authorization: {TOKEN}"])[2] == "Authorization: SECRET_REMOVED"


def test_a_secret_printed_in_pieces_across_lines_is_removed() -> None:
    r = redactor()
    pieces = [SECRET[:6], SECRET[6:15], SECRET[15:]]
    out = r.text("".join(f"stdout: {p}\n" for p in pieces) + "stdout: done\n")
    for piece in pieces:
        assert piece not in out.replace("${{ secrets.API_KEY }}", "")
    assert "${{ secrets.API_KEY }}" in out
    assert out.endswith("stdout: done\n")
    assert out.count("stdout: ") == 4, "line structure is kept"


def test_text_without_secrets_is_unchanged() -> None:
    text = "stdout: hello\nstderr: world\n"
    assert redactor().text(text) == text
    assert Redactor({}).text(text) == text


def test_output_that_may_be_the_start_of_a_secret_is_held_back_until_settled() -> None:
    r = redactor()
    partial = f"stdout: hello\nstdout: {SECRET[:8]}\n"
    assert r.settled(partial) == "stdout: hello\n"
    finished = partial + f"stdout: {SECRET[8:]}\n"
    assert SECRET[:8] not in r.text(finished).replace("${{ secrets.API_KEY }}", "")
    unrelated = "stdout: hello\nstdout: world\n"
    assert r.settled(unrelated) == unrelated
