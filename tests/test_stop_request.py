"""The stop request behind SIGTERM / SIGINT / SIGUSR2: graceful for a running training, at once otherwise."""

from __future__ import annotations

import pytest

from orchestrator.execute import StopRequest, checkpoint_then_stop


def test_a_stop_request_reaches_only_a_running_training():
    stop = StopRequest()
    assert stop.ask() is False and not stop.event.is_set()  # no training running: the caller acts itself
    with stop.training() as event:
        assert event is stop.event and not event.is_set()
        assert stop.ask() is True and event.is_set()
        assert stop.ask() is True  # a second SIGUSR2 on Slurm still waits for the checkpoint
    assert not stop.event.is_set()  # the request does not outlive the training
    assert stop.ask() is False


def test_the_handler_lets_the_training_checkpoint_first_and_interrupts_on_a_second_signal():
    stop = StopRequest()
    handler = checkpoint_then_stop(stop)
    with pytest.raises(KeyboardInterrupt):
        handler(15, None)  # nothing training: stop at once
    with stop.training() as event:
        handler(15, None)  # returns: the trainer checkpoints at its iteration boundary
        assert event.is_set()
        with pytest.raises(KeyboardInterrupt):
            handler(15, None)  # a second signal: at once
    with stop.training():
        with pytest.raises(KeyboardInterrupt):
            handler(15, None)  # this handler was used up: every later signal stops at once
