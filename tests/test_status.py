"""Tests for the run-status state machine (amlocal.backends.status)."""

import itertools

import pytest

from amlocal.backends import status
from amlocal.errors import AmlocalError, IllegalTransitionError

# Azure ML SDK v1's RunStatus values, spelled as the service spells them.
AZURE_ML_STATUSES = {
    "NotStarted", "Starting", "Preparing", "Queued", "Running", "Finalizing",
    "CancelRequested", "Completed", "Failed", "Canceled", "NotResponding",
}
HAPPY_PATH = ("NotStarted", "Preparing", "Queued", "Running", "Finalizing", "Completed")
TERMINAL = ("Completed", "Failed", "Canceled")
LIVE = tuple(s for s in status.ALL_STATUSES if s not in TERMINAL)


def test_vocabulary_is_exactly_azure_mls_eleven_statuses():
    assert len(status.ALL_STATUSES) == 11
    assert set(status.ALL_STATUSES) == AZURE_ML_STATUSES


def test_terminal_statuses_are_completed_failed_canceled():
    assert status.TERMINAL_STATUSES == frozenset(TERMINAL)
    assert [s for s in status.ALL_STATUSES if status.is_terminal(s)] == [
        "Completed", "Failed", "Canceled"]


@pytest.mark.parametrize("current, new", list(zip(HAPPY_PATH, HAPPY_PATH[1:])))
def test_happy_path_is_allowed_step_by_step(current, new):
    status.check_transition(current, new)  # does not raise
    assert new in status.allowed_next(current)


def test_starting_may_sit_between_not_started_and_preparing():
    status.check_transition("NotStarted", "Starting")
    status.check_transition("Starting", "Preparing")


@pytest.mark.parametrize("terminal", TERMINAL)
def test_terminal_statuses_have_no_way_out(terminal):
    assert status.allowed_next(terminal) == frozenset()
    for new in status.ALL_STATUSES:
        with pytest.raises(IllegalTransitionError):
            status.check_transition(terminal, new)


@pytest.mark.parametrize("current, new", [
    ("Completed", "Running"),
    ("Failed", "Running"),
    ("Canceled", "Queued"),
    ("Queued", "Completed"),         # skips Running and Finalizing
    ("NotStarted", "Running"),       # skips the image build and the queue
    ("Running", "Canceled"),         # a cancel must go through CancelRequested
    ("Finalizing", "Canceled"),
    ("Finalizing", "Running"),
    ("CancelRequested", "Running"),  # a requested cancel cannot be taken back
    ("CancelRequested", "Completed"),
    ("Running", "Running"),          # not a move at all
])
def test_illegal_moves_raise_and_name_both_statuses(current, new):
    with pytest.raises(IllegalTransitionError, match=f"cannot go from {current} to {new}"):
        status.check_transition(current, new)


def test_illegal_transition_is_an_amlocal_error_so_the_cli_reports_it():
    assert issubclass(IllegalTransitionError, AmlocalError)


@pytest.mark.parametrize("current, new", [
    ("Running", "Done"),
    ("Running", "running"),  # statuses are case-sensitive, as in Azure ML
    ("Bogus", "Running"),
])
def test_unknown_status_raises_naming_it(current, new):
    unknown = new if new not in status.ALL_STATUSES else current
    with pytest.raises(IllegalTransitionError, match=f"unknown run status '{unknown}'"):
        status.check_transition(current, new)


def test_allowed_next_of_an_unknown_status_raises():
    with pytest.raises(IllegalTransitionError, match="unknown run status 'Bogus'"):
        status.allowed_next("Bogus")


@pytest.mark.parametrize("live", [s for s in LIVE if s not in ("CancelRequested", "NotResponding")])
def test_cancel_can_be_requested_from_every_live_status(live):
    status.check_transition(live, "CancelRequested")


def test_not_responding_cannot_be_cancel_requested():
    # The driving process is gone: nobody would act on the request. It is canceled directly.
    with pytest.raises(IllegalTransitionError):
        status.check_transition("NotResponding", "CancelRequested")
    status.check_transition("NotResponding", "Canceled")


def test_a_preempted_run_goes_back_to_queued():
    # A low-priority node taken away: Azure reschedules the run when a node is free again.
    status.check_transition("Running", "Queued")
    status.check_transition("Queued", "Running")


def test_not_responding_may_return_to_any_earlier_live_status():
    for earlier in ("Preparing", "Queued", "Running", "Finalizing"):
        status.check_transition("NotResponding", earlier)


def test_cancel_requested_leads_to_canceled():
    status.check_transition("CancelRequested", "Canceled")
    assert status.allowed_next("CancelRequested") == {"Canceled", "Failed"}


@pytest.mark.parametrize("live", LIVE)
def test_every_live_status_may_fail(live):
    status.check_transition(live, "Failed")


def test_not_responding_is_entered_from_running_and_may_come_back():
    status.check_transition("Running", "NotResponding")
    status.check_transition("NotResponding", "Running")


def test_allowed_next_agrees_with_check_transition_everywhere():
    for current, new in itertools.product(status.ALL_STATUSES, repeat=2):
        allowed = new in status.allowed_next(current)
        try:
            status.check_transition(current, new)
        except IllegalTransitionError:
            assert not allowed, (current, new)
        else:
            assert allowed, (current, new)


def test_allowed_next_cannot_be_used_to_change_the_machine():
    # What callers get is frozen: nobody can open a new move by mutating it.
    with pytest.raises(AttributeError):
        status.allowed_next("Completed").add("Running")
    with pytest.raises(IllegalTransitionError):
        status.check_transition("Completed", "Running")


# -- stage statuses ---------------------------------------------------------------------------

def test_stage_vocabulary_is_the_six_statuses_azure_shows_for_a_stage():
    assert status.STAGE_STATUSES == ("NotStarted", "Running", "Completed", "Failed", "Canceled",
                                     "Preempted")


@pytest.mark.parametrize("current, new", [
    ("NotStarted", "Running"), ("Running", "Completed"), ("Running", "Failed"),
    ("Running", "Canceled"), ("Running", "Preempted"), ("Preempted", "Running"),
    ("NotStarted", "Failed"), ("NotStarted", "Canceled")])
def test_a_stage_starts_once_and_ends_once(current, new):
    status.check_stage_transition(current, new)


@pytest.mark.parametrize("current, new", [
    ("NotStarted", "Completed"), ("NotStarted", "Preempted"), ("Running", "NotStarted"),
    ("Completed", "Running"), ("Completed", "Failed"), ("Failed", "Running"),
    ("Canceled", "Completed"), ("Running", "Running")])
def test_the_stage_machine_refuses_an_illegal_stage_move(current, new):
    with pytest.raises(IllegalTransitionError, match=f"a stage cannot go from {current} to {new}"):
        status.check_stage_transition(current, new)


def test_only_a_requeued_run_runs_a_completed_stage_again():
    status.check_stage_transition("Completed", "Running", requeued=True)
    with pytest.raises(IllegalTransitionError):
        status.check_stage_transition("Failed", "Running", requeued=True)


@pytest.mark.parametrize("current, new", [("Queued", "Running"), ("Running", "Paused")])
def test_an_unknown_stage_status_is_refused_naming_it(current, new):
    with pytest.raises(IllegalTransitionError, match="unknown stage status"):
        status.check_stage_transition(current, new)
