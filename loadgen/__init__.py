"""wattserve load generation: prompt sets, the Locust replay and the run protocol (``python -m loadgen.bench``).

Modules, one idea each:
    prompts          named / file prompt sets, hash-checked at load
    generate_prompts seeded HumanEval prompt generator (the study's method, with a seed)
    locustfile       one Locust user that replays a prompt set once, in order, recording every request
    runfolder        the crash-safe run-folder writer and the manifest validator (docs/run-folder.md)
    runners          how the service under test is started (native subprocess; docker later)
    prepare          artifact preparation in a child process, outside every measured window
    replay           the Locust subprocess seen from the protocol
    hostinfo         host hardware and software versions for run.json
    sampling         the sensor-sampler interface the protocol drives (a no-op by default)
    protocol         one run: prepare, load, idle before, inference, idle after, stop, write
    summary          per-run summary, agreement with torch, the comparison table
    progress         the one-line status display with ETA
    bench            the CLI
"""
