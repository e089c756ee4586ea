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


@pytest.mark.parametrize("which", ["sweep", "engine"])
def test_a_forked_child_that_inherited_the_handler_ignores_the_signal(which, capfd):
    """A data loader's worker processes are forked from the training's process and inherit its
    handler; a terminal's Ctrl-C reaches them too, and each printed the notice once more (and a second
    Ctrl-C raised in them). In a child the handler now does nothing: the parent decides."""
    import os
    import threading

    from famix_core.interrupts import stop_on_signals

    notices = []
    if which == "sweep":
        stop = StopRequest()
        handler = checkpoint_then_stop(stop, notice=lambda: print("notice", flush=True))
        context, event = stop.training(), stop.event
    else:
        event = threading.Event()
        context = stop_on_signals(event, "notice")
    with context:
        if which == "engine":
            import signal

            handler = signal.getsignal(signal.SIGINT)
        pid = os.fork()
        if pid == 0:  # the child: two Ctrl-C, as a worker gets them
            code = 0
            try:
                handler(2, None)
                handler(2, None)
            except KeyboardInterrupt:
                code = 1
            os._exit(code + (2 if event.is_set() else 0))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0  # neither raised nor asked the child's copy to stop
        notices.append(capfd.readouterr())
        handler(2, None)  # the parent itself still asks the training to stop
        assert event.is_set()
    assert "notice" not in notices[0].out + notices[0].err
