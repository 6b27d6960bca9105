"""The thread governor follows the measured throughput, with a simulated machine."""

from flowlib.machine.threads import ThreadGovernor, candidate_thread_counts


class FakeMachine:
    """Step time as a function of the thread count and how many other processes are busy."""

    def __init__(self):
        self.threads = None
        self.busy = 0
        self.now = 0.0
        self.switches = []

    def set_threads(self, n):
        self.threads = n
        self.switches.append(n)

    def step_seconds(self, threads):
        if self.busy == 0:
            return {1: 0.20, 2: 0.12}[threads]          # quiet: 2 threads win
        return {1: 0.35, 2: 6.0}[threads]               # shared: 2 threads collapse

    def clock(self):
        return self.now


def run_steps(governor, machine, n):
    for _ in range(n):
        seconds = machine.step_seconds(governor.threads)
        machine.now += seconds
        governor.step_done(seconds, 64)


def make(machine, **kw):
    governor = ThreadGovernor(cores=2, set_threads=machine.set_threads, clock=machine.clock, **kw)
    machine.threads = governor.threads
    return governor


def test_candidates_halve_down_to_one():
    assert candidate_thread_counts(1) == [1]
    assert candidate_thread_counts(2) == [2, 1]
    assert candidate_thread_counts(16) == [16, 8, 4, 2, 1]


def test_quiet_machine_keeps_every_core():
    machine = FakeMachine()
    governor = make(machine)
    run_steps(governor, machine, 100)
    assert governor.threads == 2
    assert [t for t, _ in governor.history] == [2, 1]   # each count measured once


def test_contention_moves_to_one_thread_and_back_when_it_ends():
    machine = FakeMachine()
    governor = make(machine, recheck_s=30.0)
    run_steps(governor, machine, 40)
    assert governor.threads == 2
    machine.busy = 2                      # a class arrives: throughput collapses at 2 threads
    run_steps(governor, machine, 40)
    assert governor.threads == 1
    machine.busy = 0                      # they leave: the scheduled re-check finds 2 faster
    run_steps(governor, machine, 400)
    assert governor.threads == 2


def test_a_single_core_never_switches():
    switched = []
    governor = ThreadGovernor(cores=1, set_threads=switched.append)
    for _ in range(50):
        governor.step_done(0.1, 64)
    assert not governor.active and governor.threads == 1 and switched == []


def test_a_busy_start_stays_on_one_thread_and_later_gives_up_on_two_after_one_step():
    # Beside a busy process, 2 threads take 6 s a step: six of them held the first point for
    # half a minute. Started on 1 thread, the first steps stay there; the re-check 30 s later
    # tries 2 threads and ends that probe after its first (slow) step.
    machine = FakeMachine()
    machine.busy = 2
    governor = make(machine, start_threads=1, recheck_s=30.0)
    assert governor.threads == 1 and machine.switches[0] == 1
    run_steps(governor, machine, 20)
    assert machine.now < 20 * 0.35 + 0.01 and [t for t, _ in governor.history] == [1]
    run_steps(governor, machine, 120)                  # past the re-check
    assert governor.threads == 1
    assert [t for t, _ in governor.history][:3] == [1, 1, 2]
    assert sum(1 for t in machine.switches if t == 2) == 1


def test_a_quiet_machine_found_busy_at_the_start_gets_both_threads_at_the_re_check():
    machine = FakeMachine()
    governor = make(machine, start_threads=1, recheck_s=30.0)
    run_steps(governor, machine, 300)
    assert governor.threads == 2
