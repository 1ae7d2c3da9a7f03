"""The dead-letter header texts hold no phone number and no credential, whatever the error said."""

from consumer.outcomes.deadletter import MAX_MESSAGE_CHARS, Failure, dead_letter_headers, error_text


class FakeMessage:
    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def topic(self) -> str:
        return "transactions"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


def test_error_message_header_is_redacted() -> None:
    text = ("Invalid parameters: 0532.123.45.67, 905321234567x, +90\u00a0532\u00a0123\u00a045\u00a067 "
            "via https://user:reg-pw-1@registry/x?token=t-2")
    headers = dict(dead_letter_headers(FakeMessage(), Failure("pisano_error", text, code=13028)))
    shown = headers["pisano.error.message"].decode()
    for leaked in ("123.45.67", "5321234567", "532\u00a0123", "reg-pw-1", "t-2"):
        assert leaked not in shown
    assert shown.startswith("Invalid parameters:")


def test_error_message_header_redacts_percent_encoded_phones() -> None:
    """Found in review: Pisano or a proxy echoing the request's query showed the number."""
    shown = error_text("Invalid parameters for to=0532%20123%2045%2067&alt=%2B90%20532%20123%2045%2068")
    assert "%2045%2067" not in shown and "%2045%2068" not in shown
    assert "".join(ch for ch in shown if ch.isdigit()).count("123") == 0, shown
    assert shown.startswith("Invalid parameters for to=")


def test_error_text_is_bounded_and_cut_numbers_do_not_leak() -> None:
    text = "x" * (MAX_MESSAGE_CHARS - 5) + " +905321234567"
    shown = error_text(text * 50)
    assert len(shown) <= MAX_MESSAGE_CHARS
    assert "53212" not in shown


def test_a_fragment_cut_off_at_the_bound_does_not_reach_the_header_after_masking_shrinks_the_text() -> None:
    """Found in review: the text is cut at four times the header's length before it is masked;
    masking a long user info shrank what precedes the cut, and the number cut in half there (six
    digits, below the redaction's seven) came into the header."""
    cut_at = MAX_MESSAGE_CHARS * 4
    head = "a mapper said route=a://" + "x" * (cut_at - 38) + "@ call +90555"
    text = error_text(head + "1234567 now")
    assert len(head) < cut_at < len(head) + 7  # the number is cut by the first bound
    assert "90555" not in text and "+9" not in text, text[-80:]
    assert len(text) <= MAX_MESSAGE_CHARS


def test_a_long_quote_without_spaces_keeps_its_text_when_cut() -> None:
    """Found in review of the cut above: looking for the last space anywhere dropped all but "ab"."""
    text = error_text("ab " + "x" * 5000)
    assert len(text) == MAX_MESSAGE_CHARS and text.startswith("ab xxx")
