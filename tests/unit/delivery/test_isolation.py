from consumer.config.windows import parse_rate_limits
from consumer.delivery.isolation import UNTHROTTLED_BUDGET, IsolationBudget, split


def test_split_keeps_every_item_once() -> None:
    assert split([1, 2, 3, 4, 5]) == [[1, 2], [3, 4, 5]]
    assert split([1, 2]) == [[1], [2]]


def test_budget_is_a_share_of_the_longest_window() -> None:
    assert IsolationBudget.for_windows(parse_rate_limits("20/5s,40/25s,80/125s,160/625s"), 0.25).left == 40
    assert IsolationBudget.for_windows(parse_rate_limits("20/5s"), 0.0).left == 2  # never below 2
    assert IsolationBudget.for_windows((), 0.25).left == UNTHROTTLED_BUDGET


def test_budget_is_spent_once() -> None:
    budget = IsolationBudget(2)
    assert budget.spend() and budget.spend() and not budget.spend()
