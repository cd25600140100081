"""``python -m loadgen.study SPEC``: a whole study — models × configurations × repetitions — in one command.

The study's matrix is days of machine time, so it must survive what days bring:

- **Order.** Repetition-major blocks, each a seeded random permutation of every (model,
  configuration) cell: every configuration gets its n-th run before any gets its (n+1)-th, and no
  fixed order lets drift or heat favour one. The seed (drawn when the spec gives none) and the whole
  order are recorded in ``study.json`` on the first start and reused on every resume.
- **Resumable.** The truth is the run folders (``runs/``), whose ``run.json`` is written last and
  names its cell. A resume counts a cell done only when it has a ``complete`` run, so a run that
  was cut off (the runner killed with SIGKILL leaves ``status: running``) is marked ``failed``
  (abandoned), its rows kept, and the cell runs again: none lost, none duplicated, none counted
  half-written. A lock file keeps two runners off one study.
- **Retries.** A failed run (service crashed or hung, a request failed) is retried at the end of
  the queue, up to ``retries`` times; a cell that keeps failing is reported, not hidden.
- **Rest.** ``protocol.rest_s`` really waits between runs (the study's cool-down was a no-op).
"""


from loadgen.study.plan import STUDY_FILE, Cell, Checked, check, load_or_create_plan, run_order, spec_digest
from loadgen.study.spec import Protocol, Sensors, StudyError, StudySpec, load_spec
from loadgen.study.state import ABANDONED, LOCK_FILE, RUNS_DIR, CellState, abandon, reconcile, study_lock
from loadgen.study.summary import SUMMARY_FILE, summary_text

__all__ = ["ABANDONED", "LOCK_FILE", "RUNS_DIR", "STUDY_FILE", "SUMMARY_FILE", "Cell", "CellState", "Checked",
           "Protocol", "Sensors", "StudyError", "StudySpec", "abandon", "check", "load_or_create_plan", "load_spec",
           "reconcile", "run_order", "spec_digest", "study_lock", "summary_text"]
