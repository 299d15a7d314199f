"""The continuity state machine as pure functions: hysteresis, flapping, alert-only, overrides."""
import pytest

from gateway.continuity.engine import (CommandRefused, EngineState, HealthTracker, Mode, Settings,
                                       admin, decide, holds_mail, replay_finished)

AUTO = Settings(automatic=True, enter_after=60.0, hold_down=300.0)
ALERT_ONLY = Settings(automatic=False, enter_after=60.0, hold_down=300.0)


def run(samples, settings=AUTO, state=None, step=1.0):
    """Feed (ok) samples one per ``step`` seconds; return the states visited and the final one."""
    tracker, state = HealthTracker(), state or EngineState()
    modes = [state.mode]
    for i, ok in enumerate(samples):
        t = decide(state, tracker.observe(ok, i * step, "probe"), settings)
        if t is not None:
            state = t.new
            modes.append(state.mode)
    return modes, state


def test_continuous_failure_enters_continuity_after_threshold_not_before():
    modes, state = run([False] * 60)          # t = 0 .. 59: not yet 60 s of failure
    assert state.mode is Mode.DEGRADED
    modes, state = run([False] * 61)          # t = 60: 60 s of failure
    assert modes == [Mode.NORMAL, Mode.DEGRADED, Mode.CONTINUITY]
    assert state.origin == "auto" and state.event_id.startswith("CE-")
    assert holds_mail(state)


def test_one_failure_in_three_never_triggers():
    modes, state = run([True, True, False] * 400)   # 20 minutes of flapping
    assert Mode.CONTINUITY not in modes
    assert state.mode in (Mode.NORMAL, Mode.DEGRADED)


def test_outage_shorter_than_threshold_never_triggers():
    modes, _ = run([True] * 10 + [False] * 59 + [True] * 100)
    assert Mode.CONTINUITY not in modes
    assert modes[-1] is Mode.NORMAL


def test_recovery_shorter_than_hold_down_never_ends_event():
    samples = [False] * 61 + ([True] * 299 + [False]) * 3
    modes, state = run(samples)
    assert state.mode is Mode.CONTINUITY
    assert Mode.RECOVERING not in modes


def test_recovery_after_hold_down_replays_then_normal():
    modes, state = run([False] * 61 + [True] * 301)
    assert modes[-1] is Mode.RECOVERING
    assert not holds_mail(state)
    t = replay_finished(state, 1000.0)
    assert t.new.mode is Mode.NORMAL and t.new.event_id == ""


def test_failure_during_replay_goes_back_to_continuity_only_after_enter_after():
    """Hysteresis on the way back too: one failed probe while recovering changes nothing; a
    failure lasting enter_after (60 s) returns to continuity, as normal -> continuity would."""
    _, state = run([False] * 61 + [True] * 301)
    assert state.mode is Mode.RECOVERING
    tracker = HealthTracker()
    assert decide(state, tracker.observe(False, 500.0, "down again"), AUTO) is None
    assert decide(state, tracker.observe(False, 559.0, "down again"), AUTO) is None
    t = decide(state, tracker.observe(False, 560.0, "down again"), AUTO)
    assert t.new.mode is Mode.CONTINUITY and t.new.origin == "auto"


def test_flapping_during_replay_never_goes_back_to_continuity():
    _, state = run([False] * 61 + [True] * 301)
    tracker = HealthTracker()
    for i in range(600):                       # one probe in three fails, for 10 minutes
        assert decide(state, tracker.observe(i % 3 != 2, 1000.0 + i, "flap"), AUTO) is None
    assert state.mode is Mode.RECOVERING


def test_durations_use_health_now_and_since_uses_the_wall_clock():
    """``Health.now`` is the monotonic clock (durations); ``Health.wall`` the wall clock stamped
    on ``since`` (persisted, shown). A wall-clock step of an hour either way changes no decision."""
    for step in (3600.0, -3600.0):
        tracker, state, entered = HealthTracker(), EngineState(), None
        for i in range(200):
            mono = 50.0 + i
            wall = 1_800_000_000.0 + i + (step if i >= 30 else 0.0)   # the NTP step at i = 30
            t = decide(state, tracker.observe(False, mono, "down", wall=wall), AUTO)
            if t is not None:
                state = t.new
                if state.mode is Mode.CONTINUITY and entered is None:
                    entered = (mono, state.since)
        assert entered == (50.0 + 60, 1_800_000_000.0 + 60 + step), (step, entered)


def test_alert_only_waits_for_confirmation():
    modes, state = run([False] * 200, ALERT_ONLY)
    assert Mode.CONTINUITY not in modes
    assert state.mode is Mode.DEGRADED and state.awaiting_confirm
    t = admin(state, "confirm", 300.0, "alice")
    assert t.new.mode is Mode.CONTINUITY and t.actor == "alice"


def test_confirm_without_pending_alert_is_refused():
    with pytest.raises(CommandRefused):
        admin(EngineState(), "confirm", 0.0, "alice")


def test_admin_event_ignores_healthy_evidence_until_stopped():
    t = admin(EngineState(), "start", 10.0, "bob", "cert renewal went wrong")
    assert t.new.mode is Mode.CONTINUITY and t.new.origin == "admin"
    assert t.new.reason == "cert renewal went wrong"
    _, state = run([True] * 1000, state=t.new)
    assert state.mode is Mode.CONTINUITY
    stop = admin(state, "stop", 2000.0, "bob")
    assert stop.new.mode is Mode.RECOVERING


def test_maintenance_start_and_stop():
    t = admin(EngineState(), "maintenance-start", 0.0, "ops")
    assert t.new.origin == "maintenance" and t.new.reason == "planned maintenance"
    with pytest.raises(CommandRefused):
        admin(t.new, "maintenance-start", 1.0, "ops")
    assert admin(t.new, "maintenance-stop", 5.0, "ops").new.mode is Mode.RECOVERING


def test_stop_in_normal_is_refused_and_unknown_command_too():
    with pytest.raises(CommandRefused):
        admin(EngineState(), "stop", 0.0, "x")
    with pytest.raises(CommandRefused):
        admin(EngineState(), "reboot", 0.0, "x")


def test_no_evidence_changes_nothing():
    modes, state = run([None] * 500)
    assert modes == [Mode.NORMAL]
